"""The Gradio demo (`demo/app.py`) in a real browser: headless Chromium driven by Selenium.

The app runs in a subprocess on a free local port with tiny random models saved in a temporary folder; the test
uploads the bundled example image, runs panoptic segmentation and checks that the overlay appears and that the
legend lists exactly the segments the same pipeline returns for that image; then the same for the video tab with
the bundled example video. Screenshots are written to `outputs/test_artifacts/` (and the test's tmp folder).
The browser tests are skipped only when Chromium or its driver is missing (`.ci/run` installs Debian's `chromium`
and `chromium-driver`). The model choice (folder, Hub id, offline fallback) is also tested without a browser.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_maskformer_series as hms
from hf_maskformer_series.pipeline_video import read_video_frames
from tests._tiny_configs import tiny_mask2former_kwargs

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
EXAMPLE_IMAGE = ROOT / "demo" / "examples" / "shapes.png"
EXAMPLE_VIDEO = ROOT / "demo" / "examples" / "shapes.mp4"
ARTIFACTS = ROOT / "outputs" / "test_artifacts"
LABELS = {0: "circle", 1: "square", 2: "triangle", 3: "cross"}
WINDOW = 4  # the video tab's `window`, set in the browser (the bundled video has 10 frames: three clips)

_spec = importlib.util.spec_from_file_location("demo_browser", ROOT / "demo" / "browser.py")
browser_steps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser_steps)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def app():
    """`demo/app.py` imported as a module (for its model-choice functions)."""
    spec = importlib.util.spec_from_file_location("demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """Tiny random image and video Mask2Formers saved with their processors: (image folder, video folder)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("demo_models")
    image_model = hms.SeriesMask2FormerForUniversalSegmentation(
        hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs(), id2label=LABELS))
    image_model.save_pretrained(root / "image")
    hms.SeriesMask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(root / "image")
    video_model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(
        hms.SeriesVideoMask2FormerConfig(**tiny_mask2former_kwargs(), id2label=LABELS))
    video_model.save_pretrained(root / "video")
    hms.SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(
        root / "video")
    return root / "image", root / "video"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def started_server(model_folders, tmp_path_factory):
    """`python demo/app.py` on a free port, started with the module's first test (it boots while the tests without
    a browser run); yields (process, URL, log path), or None without a browser to drive it, and stops it."""
    if None in browser_steps.chromium_paths():
        yield None
        return
    image_folder, video_folder = model_folders
    port = _free_port()
    log_path = tmp_path_factory.mktemp("demo_server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(APP), "--model", str(image_folder), "--video-model", str(video_folder),
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://127.0.0.1:{port}/", log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(started_server):
    """The URL of the started demo, once it answers."""
    if started_server is None:
        pytest.skip("needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    process, url, log_path = started_server
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"the demo exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return url
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not answer on {url}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def browser():
    if None in browser_steps.chromium_paths():
        pytest.skip("needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    driver = browser_steps.headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def test_model_choice_fails_fast_with_one_line(app, monkeypatch, tmp_path):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(app.ModelUnavailable, match="not in the local Hub cache and HF_HUB_OFFLINE") as offline:
        app.resolve_model("someone/a-model-nobody-cached")
    with pytest.raises(app.ModelUnavailable, match="no model folder at ./missing"):
        app.resolve_model("./missing")
    assert app.resolve_model(f" {tmp_path} ") == str(tmp_path)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    with pytest.raises(app.ModelUnavailable, match="cannot reach the Hugging Face Hub") as no_network:
        app.resolve_model("someone/a-model-nobody-cached")
    assert "\n" not in str(offline.value) and "\n" not in str(no_network.value)

    # offline, the default image model is the main job's trained model when there is one, else a clear message
    monkeypatch.setattr(app, "TRAINED_IMAGE_MODEL", tmp_path)
    assert Path(app.default_image_model()).resolve() == tmp_path.resolve()
    monkeypatch.setattr(app, "TRAINED_IMAGE_MODEL", tmp_path / "missing")
    with pytest.raises(app.ModelUnavailable, match="train_panoptic.py"):
        app.default_image_model()


def _screenshot(driver, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(tmp_path / name))
    shutil.copyfile(tmp_path / name, ARTIFACTS / name)


def test_image_tab_shows_the_pipeline_segments(server, browser, model_folders, tmp_path):
    # threshold 0: a random tiny model is never confident, keep every segment
    overlay = browser_steps.segment_image(browser, server, EXAMPLE_IMAGE, "panoptic", threshold=0)
    _screenshot(browser, tmp_path, "demo_image_tab.png")

    image = Image.open(EXAMPLE_IMAGE).convert("RGB")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  overlay) == list(image.size)
    segments = pipeline("image-segmentation", model=str(model_folders[0]))(
        image, subtask="panoptic", threshold=0.0, mask_threshold=0.5, overlap_mask_area_threshold=0.8)
    assert segments, "the tiny model should give segments at threshold 0"
    assert browser_steps.legend(browser, "image-legend") == [(s["label"], f"{s['score']:.3f}") for s in segments]
    expected_rows = [[str(k + 1), s["label"], f"{s['score']:.3f}"] for k, s in enumerate(segments)]
    browser_steps.WebDriverWait(browser, 30).until(
        lambda d: [row[:3] for row in browser_steps.table_rows(d, "image-segments")] == expected_rows)


def test_video_tab_shows_the_pipeline_tracks(server, browser, model_folders, tmp_path):
    frames = list(read_video_frames(EXAMPLE_VIDEO))
    browser_steps.track_video(browser, server, EXAMPLE_VIDEO, len(frames), window=WINDOW, threshold=0)
    _screenshot(browser, tmp_path, "demo_video_tab.png")

    tracks = pipeline("video-instance-segmentation", model=str(model_folders[1]))(
        frames, window=WINDOW, threshold=0.0, mask_threshold=0.5)
    assert tracks
    assert browser_steps.legend(browser, "video-legend") == [(t["label"], f"{t['score']:.3f}") for t in tracks]
    assert len(browser.find_elements(browser_steps.By.CSS_SELECTOR, "#video-frames img")) == len(frames)
    expected_rows = [[str(k + 1), t["label"], f"{t['score']:.3f}"] for k, t in enumerate(tracks)]
    browser_steps.WebDriverWait(browser, 30).until(
        lambda d: [row[:3] for row in browser_steps.table_rows(d, "video-tracks")] == expected_rows)


def test_an_uncached_hub_id_offline_gives_a_one_line_status(server, browser):
    wait = browser_steps.open_tab(browser, server, "Image")
    box = browser.find_element(browser_steps.By.CSS_SELECTOR, "#image-model textarea, #image-model input")
    box.clear()
    box.send_keys("someone/a-model-nobody-cached")
    browser.find_element(browser_steps.By.CSS_SELECTOR, "#image-load").click()
    status = wait.until(lambda d: "not loaded" in (text := d.find_element(
        browser_steps.By.ID, "image-model-status").text) and text)
    assert "not in the local Hub cache" in status and "\n" not in status.strip()
