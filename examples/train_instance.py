"""Train Mask2Former for instance segmentation (COCO instance JSON with polygons or RLE; metric: mask AP) with
Accelerate.

    accelerate launch examples/train_instance.py            # synthetic data (instances_<split>.json), tiny model

See examples/README.md; all options: ``--help``. The training loop is ``segmentation_training.py``, the
task ``task_instance.py``.
"""

from segmentation_training import main

if __name__ == "__main__":
    main("instance")
