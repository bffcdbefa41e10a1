"""Gradio demo for MaskFormer, Mask2Former and video Mask2Former checkpoints (a Hugging Face Space as it is).

    python demo/app.py [--model FOLDER_OR_HUB_ID] [--video-model FOLDER_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]

Image tab: `pipeline("image-segmentation")` with a panoptic / instance / semantic subtask and its `threshold`,
`mask_threshold` and `overlap_mask_area_threshold`; the result is drawn over the image with a legend (colour, label,
score per segment) and a table of the segments. Video tab: `pipeline("video-instance-segmentation")` (registered by
`hf_maskformer_series`) with `window`, drawn over every frame (a video and a frame gallery). All inference is the
package's pipelines; this file only loads them and draws their results.

Model choice: `--model` (or the `DEMO_MODEL` environment variable, e.g. a Space variable), else the Hub model
`DEFAULT_HUB_MODEL`; when the Hub cannot be reached and the model is not cached, the model trained by the main job
(`outputs/train_panoptic`, from `accelerate launch examples/train_panoptic.py`) if present, else a one-line message.
The video model: `--video-model` / `DEMO_VIDEO_MODEL`, else `outputs/train_video` (`examples/train_video.py`).
"""

from __future__ import annotations

import argparse
import functools
import html
import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image
from transformers import pipeline

import hf_maskformer_series  # noqa: F401 - registers the models and the video pipeline
from hf_maskformer_series.pipeline_video import read_video_frames

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE_IMAGE = HERE / "examples" / "shapes.png"
EXAMPLE_VIDEO = HERE / "examples" / "shapes.mp4"
DEFAULT_HUB_MODEL = "facebook/mask2former-swin-tiny-coco-panoptic"
TRAINED_IMAGE_MODEL = ROOT / "outputs" / "train_panoptic"
TRAINED_VIDEO_MODEL = ROOT / "outputs" / "train_video"
IMAGE_TASK = "image-segmentation"
VIDEO_TASK = "video-instance-segmentation"
SUBTASKS = ("panoptic", "instance", "semantic")
MAX_VIDEO_FRAMES = 300
HUB_PROBE_TIMEOUT_S = 5.0
# 20 well-separated colours (RGB), one per segment / track in order
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
], dtype=np.uint8)
CSS = """
.seg-legend { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 0.95em; }
.seg-item { display: inline-flex; align-items: center; gap: 6px; }
.seg-swatch { width: 14px; height: 14px; border-radius: 3px; border: 1px solid #0004; display: inline-block; }
.seg-score { opacity: 0.7; font-variant-numeric: tabular-nums; }
#input-image img, #image-overlay img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""


class ModelUnavailable(Exception):
    """A model cannot be loaded; the message is one line meant for the user."""


# ---------------------------------------------------------------------------------------------------------------
# models


def resolve_model(name: str) -> str:
    """A local folder, or a Hub id that is cached or downloadable now, as what `pipeline(model=...)` should get.

    Fails fast (one Hub probe of at most `HUB_PROBE_TIMEOUT_S` seconds) with `ModelUnavailable` when the model is
    neither a folder, nor cached, nor reachable.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    name = name.strip()
    if not name:
        raise ModelUnavailable("no model given: type a local folder or a Hub id")
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelUnavailable(f"no model folder at {name}")

    def cached() -> str | None:
        try:
            return snapshot_download(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the cache (or not a valid repo id)
            return None

    if constants.HF_HUB_OFFLINE:
        if (folder := cached()) is not None:
            return folder
        raise ModelUnavailable(f"'{name}' is not in the local Hub cache and HF_HUB_OFFLINE is set: use a local folder")
    try:
        HfApi().model_info(name, timeout=HUB_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError as error:
        raise ModelUnavailable(f"no model '{name}' on the Hugging Face Hub (or it is private)") from error
    except HfHubHTTPError as error:
        raise ModelUnavailable(f"the Hub refused '{name}': {str(error).splitlines()[0]}") from error
    except Exception as error:  # noqa: BLE001 - connection errors of any HTTP backend
        if (folder := cached()) is not None:
            return folder
        raise ModelUnavailable(f"cannot reach the Hugging Face Hub to download '{name}' (offline?): "
                               "use a local folder") from error
    return name


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it (shorter in the textbox), else absolute."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def default_image_model() -> str:
    """`DEFAULT_HUB_MODEL` when it can be loaded, else (offline) the main job's trained model if present."""
    try:
        return resolve_model(DEFAULT_HUB_MODEL)
    except ModelUnavailable as error:
        if TRAINED_IMAGE_MODEL.is_dir():
            return _shown_path(TRAINED_IMAGE_MODEL)
        raise ModelUnavailable(f"{error}; no trained model at {TRAINED_IMAGE_MODEL} either (train one with "
                               "`accelerate launch examples/train_panoptic.py`)") from error


def default_video_model() -> str:
    if TRAINED_VIDEO_MODEL.is_dir():
        return _shown_path(TRAINED_VIDEO_MODEL)
    raise ModelUnavailable("no video model: pass --video-model (a folder or Hub id) or train one with "
                           "`accelerate launch examples/train_video.py`")


@functools.lru_cache(maxsize=4)
def load_pipeline(task: str, name: str):
    """The pipeline of `task` for the model `name` (a folder or Hub id), loaded once."""
    source = resolve_model(name)
    try:
        return pipeline(task, model=source)
    except Exception as error:  # noqa: BLE001 - any loading failure becomes the one-line status
        raise ModelUnavailable(f"cannot load '{name}' for {task}: {str(error).strip().splitlines()[0]}") from error


def describe(task: str, name: str) -> str:
    """Load the model and say what it is (Markdown), or why it cannot be loaded."""
    try:
        segmenter = load_pipeline(task, name)
    except ModelUnavailable as error:
        return f"**Model not loaded:** {error}"
    config = segmenter.model.config
    labels = ", ".join(str(label) for label in list(config.id2label.values())[:12])
    more = ", ..." if len(config.id2label) > 12 else ""
    return f"**{type(segmenter.model).__name__}** from `{name}` — {len(config.id2label)} labels: {labels}{more}"


def _segmenter(task: str, name: str):
    try:
        return load_pipeline(task, name)
    except ModelUnavailable as error:
        raise gr.Error(str(error)) from error


# ---------------------------------------------------------------------------------------------------------------
# drawing


def colour(index: int) -> np.ndarray:
    return PALETTE[index % len(PALETTE)]


def overlay(image: Image.Image, masks: list[np.ndarray], alpha: float = 0.7) -> Image.Image:
    """The image with mask `k` (`[H, W]` bool) filled with `colour(k)` at `alpha` and outlined in a darker shade;
    where masks overlap (instances, tracks) the first, highest-scored one is drawn on top."""
    canvas = np.asarray(image.convert("RGB")).astype(np.float32)
    for index, mask in reversed(list(enumerate(masks))):
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour(index)
        padded = np.pad(mask, 1, mode="edge")
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        canvas[mask & ~interior] = 0.6 * colour(index)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def score_text(score: float | None) -> str:
    return "—" if score is None else f"{score:.3f}"


def legend_html(entries: list[tuple[str, float | None]]) -> str:
    """One swatch, label and score per segment / track, in the order (and colours) of `overlay`."""
    if not entries:
        return '<div class="seg-legend"><em>no segments above the threshold</em></div>'
    items = []
    for index, (label, score) in enumerate(entries):
        red, green, blue = colour(index).tolist()
        items.append(
            f'<span class="seg-item"><span class="seg-swatch" style="background: rgb({red}, {green}, {blue})">'
            f'</span><span class="seg-label">{html.escape(str(label))}</span>'
            f'<span class="seg-score">{score_text(score)}</span></span>'
        )
    return f'<div class="seg-legend">{"".join(items)}</div>'


def hex_colour(index: int) -> str:
    return "#" + "".join(f"{value:02x}" for value in colour(index).tolist())


# ---------------------------------------------------------------------------------------------------------------
# inference


def segment_image(model_name: str, image: Image.Image | None, subtask: str, threshold: float, mask_threshold: float,
                  overlap_mask_area_threshold: float):
    """Run the image pipeline; returns (overlay image, legend HTML, segment table rows)."""
    if image is None:
        raise gr.Error("upload an image first (or pick the example)")
    if subtask not in SUBTASKS:
        raise gr.Error(f"subtask must be one of {', '.join(SUBTASKS)}, got {subtask!r}")
    segmenter = _segmenter(IMAGE_TASK, model_name)
    image = image.convert("RGB")
    kwargs = {"subtask": subtask}
    if subtask != "semantic":  # semantic segmentation has no score or mask threshold
        kwargs.update(threshold=threshold, mask_threshold=mask_threshold,
                      overlap_mask_area_threshold=overlap_mask_area_threshold)
    try:
        segments = segmenter(image, **kwargs)
    except ValueError as error:  # e.g. a subtask the model's processor does not support
        raise gr.Error(str(error)) from error
    masks = [np.asarray(segment["mask"]) > 0 for segment in segments]
    rows = [[index + 1, segment["label"], score_text(segment["score"]), int(mask.sum()), hex_colour(index)]
            for index, (segment, mask) in enumerate(zip(segments, masks))]
    entries = [(segment["label"], segment["score"]) for segment in segments]
    return overlay(image, masks), legend_html(entries), rows


def _video_frames(video_path: str | None, frame_files: list[str] | None) -> tuple[list[Image.Image], float]:
    """The frames to segment (RGB PIL images) and the frame rate of the output video."""
    if frame_files:
        frames = [Image.open(path).convert("RGB") for path in sorted(frame_files, key=lambda p: Path(p).name)]
        return frames, 6.0
    if not video_path:
        raise gr.Error("upload a video or frames first (or pick the example)")
    import av

    with av.open(video_path) as container:
        rate = container.streams.video[0].average_rate
    frames = []
    for frame in read_video_frames(video_path):
        frames.append(frame)
        if len(frames) > MAX_VIDEO_FRAMES:
            raise gr.Error(f"the demo takes videos of at most {MAX_VIDEO_FRAMES} frames")
    return frames, float(rate) if rate else 6.0


def write_video(frames: list[Image.Image], path: str | os.PathLike, fps: float = 6.0) -> None:
    """Write RGB frames as an H.264 MP4 (MPEG-4 part 2 where PyAV has no libx264); odd sizes are padded by one."""
    import av

    width, height = frames[0].size
    even = (width + width % 2, height + height % 2)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = even[0], even[1], "yuv420p"
        for frame in frames:
            padded = np.pad(np.asarray(frame.convert("RGB")), ((0, even[1] - height), (0, even[0] - width), (0, 0)),
                            mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
        container.mux(stream.encode())


def segment_video(model_name: str, video_path: str | None, frame_files: list[str] | None, window: int,
                  threshold: float, mask_threshold: float):
    """Run the video pipeline; returns (overlay video path, overlay frames, legend HTML, track table rows)."""
    frames, fps = _video_frames(video_path, frame_files)
    segmenter = _segmenter(VIDEO_TASK, model_name)
    try:
        tracks = segmenter(frames, window=int(window), threshold=threshold, mask_threshold=mask_threshold)
    except ValueError as error:  # e.g. frames of different sizes
        raise gr.Error(str(error)) from error
    drawn = [overlay(frame, [np.asarray(track["masks"][t]) > 0 for track in tracks]) for t, frame in enumerate(frames)]
    output = Path(tempfile.mkdtemp(prefix="demo_video_")) / "overlay.mp4"
    write_video(drawn, output, fps)
    rows = [[index + 1, track["label"], score_text(track["score"]),
             sum(bool((np.asarray(mask) > 0).any()) for mask in track["masks"]), hex_colour(index)]
            for index, track in enumerate(tracks)]
    entries = [(track["label"], track["score"]) for track in tracks]
    gallery = [(frame, f"frame {t}") for t, frame in enumerate(drawn)]
    return str(output), gallery, legend_html(entries), rows


# ---------------------------------------------------------------------------------------------------------------
# interface


def _model_picker(task: str, name: str, status: str | None, label: str, prefix: str) -> gr.Textbox:
    """The model textbox, its *Load model* button and the status line (ids `<prefix>-model`, `<prefix>-load`,
    `<prefix>-model-status`); returns the textbox."""
    with gr.Row():
        box = gr.Textbox(name, label=f"{label} (local folder or Hub id)", scale=4, elem_id=f"{prefix}-model")
        load = gr.Button("Load model", scale=1, elem_id=f"{prefix}-load")
    status_line = gr.Markdown(status or describe(task, name), elem_id=f"{prefix}-model-status")
    load.click(functools.partial(describe, task), [box], [status_line])
    return box


def build_demo(image_model: str, video_model: str, image_status: str | None = None,
               video_status: str | None = None) -> gr.Blocks:
    """The Gradio app; `*_status` replaces the loaded-model line (e.g. a message saying no model was found)."""
    with gr.Blocks(title="MaskFormer series demo") as demo:
        gr.Markdown("# MaskFormer · Mask2Former · video Mask2Former\nSegment an image (panoptic, instance or "
                    "semantic) or track instances through a video with any checkpoint of the three families.")
        with gr.Tab("Image", id="image-tab"):
            image_model_box = _model_picker(IMAGE_TASK, image_model, image_status, "Model", "image")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], height=360,
                                     elem_id="input-image")
                    gr.Examples([[str(EXAMPLE_IMAGE)]], inputs=[image], label="Generated example")
                    subtask = gr.Radio(list(SUBTASKS), value="panoptic", label="Subtask", elem_id="subtask")
                    threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="threshold (minimum segment score)",
                                          elem_id="threshold")
                    mask_threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01,
                                               label="mask_threshold (mask probability)", elem_id="mask-threshold")
                    overlap = gr.Slider(0, 1, value=0.8, step=0.01,
                                        label="overlap_mask_area_threshold (kept fraction of a mask)",
                                        elem_id="overlap-threshold")
                    image_run = gr.Button("Segment", variant="primary", elem_id="image-run")
                with gr.Column():
                    image_out = gr.Image(type="pil", label="Segmentation", height=360, interactive=False,
                                         format="png", elem_id="image-overlay")
                    image_legend = gr.HTML(elem_id="image-legend")
                    image_table = gr.Dataframe(headers=["#", "label", "score", "pixels", "colour"],
                                               label="Segments", interactive=False, elem_id="image-segments")
        with gr.Tab("Video", id="video-tab"):
            video_model_box = _model_picker(VIDEO_TASK, video_model, video_status, "Video model", "video")
            with gr.Row():
                with gr.Column():
                    video = gr.Video(label="Short video", sources=["upload"], height=300, elem_id="input-video")
                    frames = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                     label="...or frames (images, sorted by name; used instead of the video)",
                                     elem_id="input-frames")
                    gr.Examples([[str(EXAMPLE_VIDEO)]], inputs=[video], label="Generated example")
                    window = gr.Slider(1, 64, value=8, step=1, label="window (frames per clip)", elem_id="window")
                    video_threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="threshold (minimum track score)",
                                                elem_id="video-threshold")
                    video_mask_threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01,
                                                     label="mask_threshold (mask probability)",
                                                     elem_id="video-mask-threshold")
                    video_run = gr.Button("Track", variant="primary", elem_id="video-run")
                with gr.Column():
                    video_out = gr.Video(label="Tracks", height=300, interactive=False, elem_id="video-overlay")
                    video_legend = gr.HTML(elem_id="video-legend")
                    video_gallery = gr.Gallery(label="Frames", columns=6, height=240, format="png",
                                               elem_id="video-frames")
                    video_table = gr.Dataframe(headers=["#", "label", "score", "frames", "colour"], label="Tracks",
                                               interactive=False, elem_id="video-tracks")

        image_run.click(segment_image, [image_model_box, image, subtask, threshold, mask_threshold, overlap],
                        [image_out, image_legend, image_table])
        video_run.click(segment_video, [video_model_box, video, frames, window, video_threshold,
                                        video_mask_threshold], [video_out, video_gallery, video_legend, video_table])
    return demo


def _initial(argument: str | None, environment: str, default) -> tuple[str, str | None]:
    """The model name to start with, and a status line when there is none."""
    name = argument or os.environ.get(environment)
    if name:
        return name, None
    try:
        return default(), None
    except ModelUnavailable as error:
        return "", f"**Model not loaded:** {error}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="image model: a saved folder or Hub id (default: $DEMO_MODEL, "
                        f"{DEFAULT_HUB_MODEL}, offline outputs/train_panoptic)")
    parser.add_argument("--video-model", help="video model: a saved folder or Hub id (default: $DEMO_VIDEO_MODEL, "
                        "outputs/train_video)")
    parser.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args(argv)
    image_model, image_status = _initial(args.model, "DEMO_MODEL", default_image_model)
    video_model, video_status = _initial(args.video_model, "DEMO_VIDEO_MODEL", default_video_model)
    for status in (image_status, video_status):
        if status:
            print(status.replace("**", ""))
    demo = build_demo(image_model, video_model, image_status, video_status)
    demo.queue().launch(server_name=args.host, server_port=args.port, css=CSS, ssr_mode=False,
                        allowed_paths=[str(HERE / "examples")])


if __name__ == "__main__":
    main()
