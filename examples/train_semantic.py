"""Train Mask2Former for semantic segmentation (ADE20K-style label PNGs; metric: mean IoU) with Accelerate.

    accelerate launch examples/train_semantic.py            # synthetic data (ade20k/ export), tiny model

See examples/README.md; all options: ``--help``. The training loop is ``segmentation_training.py``, the
task ``task_semantic.py``.
"""

from segmentation_training import main

if __name__ == "__main__":
    main("semantic")
