"""Write the demo's bundled examples (deterministic): a generated panoptic scene and a short generated video.

    python demo/make_examples.py      # -> demo/examples/shapes.png, demo/examples/shapes.mp4

Both come from the package's synthetic generators, from the validation split (scenes the main job does not train
on): the image is a scene of `data/synthetic.py` (the main job's data), the video one of `data/synthetic_video.py`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image

from hf_maskformer_series.data.synthetic import SyntheticPanopticConfig, render_panoptic_scene
from hf_maskformer_series.data.synthetic_video import SyntheticVideoConfig, render_video

EXAMPLES = Path(__file__).resolve().parent / "examples"
IMAGE_INDEX = 11
VIDEO_INDEX = 5
VIDEO_FPS = 4


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def main() -> None:
    from app import write_video  # the demo's own MP4 writer (imports gradio)

    scene = render_panoptic_scene(SyntheticPanopticConfig(), "val", IMAGE_INDEX)
    _atomic(EXAMPLES / "shapes.png", lambda path: Image.fromarray(scene["image"]).save(path, format="PNG"))
    video = render_video(SyntheticVideoConfig(), "val", VIDEO_INDEX)
    frames = [Image.fromarray(frame) for frame in video["frames"]]
    _atomic(EXAMPLES / "shapes.mp4", lambda path: write_video(frames, path, VIDEO_FPS))
    print(f"wrote {EXAMPLES / 'shapes.png'} and {EXAMPLES / 'shapes.mp4'} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
