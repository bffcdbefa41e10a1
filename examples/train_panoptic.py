"""Train Mask2Former for panoptic segmentation (COCO panoptic format; metric: PQ) with Accelerate.

    accelerate launch examples/train_panoptic.py            # synthetic data, tiny model, CPU-friendly
    python examples/train_panoptic.py --data_dir /path/to/coco --preset swin-tiny

See examples/README.md; all options: ``--help``. The training loop is shared with the other tasks
(``segmentation_training.py``); the task is ``task_panoptic.py``.
"""

from segmentation_training import main

if __name__ == "__main__":
    main("panoptic")
