"""Drive the running demo in headless Chromium with Selenium: the browser test (`tests/test_demo.py`) and the
README screenshot both use these steps.

    python demo/app.py --port 7860 &                      # the model to show (default: see app.py)
    python demo/browser.py --url http://127.0.0.1:7860/ --output demo/screenshot.png

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and `pip install selenium`.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

EXAMPLES = Path(__file__).resolve().parent / "examples"
TIMEOUT_S = 120


def chromium_paths() -> tuple[str | None, str | None]:
    """(browser, driver) executables on PATH, None where missing."""
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def headless_chromium(width: int = 1400, height: int = 1200) -> webdriver.Chrome:
    browser, driver = chromium_paths()
    if browser is None or driver is None:
        raise RuntimeError("needs Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    chrome.set_page_load_timeout(TIMEOUT_S)
    return chrome


def open_tab(driver: webdriver.Chrome, url: str, title: str) -> WebDriverWait:
    """Load the app and select the tab `title`; returns a waiter for the following steps."""
    driver.get(url)
    wait = WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.25)
    tab = wait.until(lambda d: next((button for button in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                     if button.text.strip() == title), None))
    tab.click()
    return wait


def set_slider(driver: webdriver.Chrome, elem_id: str, value: float) -> None:
    """Type `value` into the number box of the slider `elem_id`, as a user does, and commit it."""
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.clear()
    box.send_keys(str(value))
    driver.execute_script("arguments[0].dispatchEvent(new Event('change', {bubbles: true})); arguments[0].blur();",
                          box)


def upload(wait: WebDriverWait, elem_id: str, path: str | Path) -> None:
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"))
    box.send_keys(str(Path(path).resolve()))  # the driver wants an absolute path


def legend(driver: webdriver.Chrome, elem_id: str) -> list[tuple[str, str]]:
    """The (label, score text) of every legend entry of the HTML component `elem_id`, in order."""
    return [(item.find_element(By.CLASS_NAME, "seg-label").text, item.find_element(By.CLASS_NAME, "seg-score").text)
            for item in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} .seg-item")]


def table_rows(driver: webdriver.Chrome, elem_id: str) -> list[list[str]]:
    """The cell texts of the rows of the Dataframe `elem_id`."""
    return [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")]
            for row in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} [role=row][data-index]")]


def segment_image(driver: webdriver.Chrome, url: str, image: str | Path, subtask: str = "panoptic",
                  threshold: float | None = None):
    """Upload `image` in the image tab, run `subtask` and wait for the overlay; returns the overlay `<img>`."""
    wait = open_tab(driver, url, "Image")
    upload(wait, "input-image", image)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
    if threshold is not None:
        set_slider(driver, "threshold", threshold)
    driver.find_element(By.CSS_SELECTOR, f"#subtask input[value={subtask}]").click()
    driver.find_element(By.CSS_SELECTOR, "#image-run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image-legend .seg-legend"))
    overlay = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image-overlay img"))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    return overlay


def track_video(driver: webdriver.Chrome, url: str, video: str | Path, num_frames: int, window: int | None = None,
                threshold: float | None = None) -> None:
    """Upload `video` in the video tab, run tracking and wait for the overlay video and its `num_frames` frames."""
    wait = open_tab(driver, url, "Video")
    upload(wait, "input-video", video)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-video video"))
    if window is not None:
        set_slider(driver, "window", window)
    if threshold is not None:
        set_slider(driver, "video-threshold", threshold)
    driver.find_element(By.CSS_SELECTOR, "#video-run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-legend .seg-legend"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#video-frames img")) >= num_frames)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-overlay video"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--image", default=str(EXAMPLES / "shapes.png"))
    parser.add_argument("--subtask", default="panoptic")
    parser.add_argument("--output", default="demo/screenshot.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=980)
    args = parser.parse_args(argv)
    driver = headless_chromium(args.width, args.height)
    try:
        segment_image(driver, args.url, args.image, args.subtask)
        driver.execute_script("window.scrollTo(0, 0)")
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(output.name + ".tmp")
        # a palette PNG keeps the committed file small (the page is flat colours)
        screenshot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        screenshot.quantize(256).save(temporary, format="PNG", optimize=True)
        os.replace(temporary, output)
        print(f"wrote {output}: legend {legend(driver, 'image-legend')}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
