"""The Gradio demo (`demo/app.py`) in a real browser: headless Chromium driven by Selenium.

The app runs in a subprocess on a free local port with tiny random models saved in a temporary folder; the test
uploads the bundled example image, runs panoptic segmentation and checks that the overlay appears and that the
legend lists exactly the segments the same pipeline returns for that image; then the same for the video tab with
the bundled example video. Screenshots are written to `outputs/test_artifacts/` (and the test's tmp folder).
Skipped only when Chromium or its driver is missing (`.ci/run` installs Debian's `chromium` and
`chromium-driver`).
"""

from __future__ import annotations

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
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WINDOW = 4  # the video tab's `window`, set in the browser (the bundled video has 10 frames: three clips)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"),
    pytest.mark.timeout(300),
]
webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("gradio")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


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


@pytest.fixture(scope="module")
def server(model_folders, tmp_path_factory):
    """`python demo/app.py` on a free port; yields its URL and stops it afterwards."""
    image_folder, video_folder = model_folders
    port = _free_port()
    log_path = tmp_path_factory.mktemp("demo_server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(APP), "--model", str(image_folder), "--video-model", str(video_folder),
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"the demo exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the demo did not answer on {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _set_slider(driver, elem_id: str, value: float) -> None:
    """Type `value` into the number box of the slider `elem_id` (what a user does) and commit it."""
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.clear()
    box.send_keys(str(value))
    driver.execute_script("arguments[0].dispatchEvent(new Event('change', {bubbles: true}));"
                          "arguments[0].blur();", box)


def _legend(driver, elem_id: str) -> list[tuple[str, str]]:
    items = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} .seg-item")
    return [(item.find_element(By.CLASS_NAME, "seg-label").text, item.find_element(By.CLASS_NAME, "seg-score").text)
            for item in items]


def _screenshot(driver, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(tmp_path / name))
    shutil.copyfile(tmp_path / name, ARTIFACTS / name)


def _open_tab(driver, url: str, title: str) -> WebDriverWait:
    driver.get(url)
    wait = WebDriverWait(driver, 120, poll_frequency=0.25)
    tab = wait.until(lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                     if b.text.strip() == title), None))
    tab.click()
    return wait


def test_image_tab_shows_the_pipeline_segments(server, browser, model_folders, tmp_path):
    wait = _open_tab(browser, server, "Image")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#input-image input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(EXAMPLE_IMAGE))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
    _set_slider(browser, "threshold", 0)  # a random tiny model is never confident: keep every segment
    browser.find_element(By.CSS_SELECTOR, "#image-run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image-legend .seg-legend"))
    overlay = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-overlay img"))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    _screenshot(browser, tmp_path, "demo_image_tab.png")

    image = Image.open(EXAMPLE_IMAGE).convert("RGB")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  overlay) == list(image.size)
    segments = pipeline("image-segmentation", model=str(model_folders[0]))(
        image, subtask="panoptic", threshold=0.0, mask_threshold=0.5, overlap_mask_area_threshold=0.8)
    assert segments, "the tiny model should give segments at threshold 0"
    assert _legend(browser, "image-legend") == [(s["label"], f"{s['score']:.3f}") for s in segments]
    rows = browser.find_elements(By.CSS_SELECTOR, "#image-segments tbody tr")
    assert len(rows) == len(segments)


def test_video_tab_shows_the_pipeline_tracks(server, browser, model_folders, tmp_path):
    wait = _open_tab(browser, server, "Video")
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#input-video input[type=file]"))
    upload.send_keys(str(EXAMPLE_VIDEO))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-video video"))
    _set_slider(browser, "window", WINDOW)
    _set_slider(browser, "video-threshold", 0)
    browser.find_element(By.CSS_SELECTOR, "#video-run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-legend .seg-legend"))
    frames = list(read_video_frames(EXAMPLE_VIDEO))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#video-frames img")) >= len(frames))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-overlay video"))
    _screenshot(browser, tmp_path, "demo_video_tab.png")

    tracks = pipeline("video-instance-segmentation", model=str(model_folders[1]))(
        frames, window=WINDOW, threshold=0.0, mask_threshold=0.5)
    assert tracks
    assert _legend(browser, "video-legend") == [(t["label"], f"{t['score']:.3f}") for t in tracks]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#video-frames img")) == len(frames)
