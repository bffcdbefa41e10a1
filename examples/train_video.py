"""Train video Mask2Former for video instance segmentation (YouTube-VIS format; metric: video AP) with Accelerate.

    accelerate launch examples/train_video.py            # synthetic videos, tiny model, CPU-friendly
    python examples/train_video.py --data_dir /path/to/ytvis_2019 --preset swin-tiny --min_size_train 360 480

See examples/README.md; all options: ``--help``. The training loop is shared with the image tasks
(``segmentation_training.py``); the video task is ``task_video.py``.
"""

from segmentation_training import main

if __name__ == "__main__":
    main("video")
