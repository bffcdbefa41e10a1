"""Train Mask2Former for panoptic segmentation (COCO panoptic format; metric: PQ) with Accelerate.

    accelerate launch examples/train_panoptic.py            # synthetic data, tiny model, CPU-friendly
    python examples/train_panoptic.py --data_dir /path/to/coco --preset swin-tiny

See examples/README.md; all options: ``--help``. The code is shared with the other tasks in
``segmentation_training.py``.
"""

from segmentation_training import main

if __name__ == "__main__":
    main("panoptic")
