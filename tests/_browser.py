"""Headless Chromium (the system ``chromium`` + ``chromedriver``) driven by selenium, for the report tests, the report
benchmark and the README screenshots. No network: every flag that would reach out is off, with a fresh profile."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing (or selenium is not installed)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    browser = next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), None) or shutil.which("chromium")
    driver = next((p for p in DRIVER_CANDIDATES if os.path.exists(p)), None) or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A selenium WebDriver for a fresh headless Chromium; quits it and removes its profile afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    found = find_browser()
    if found is None:
        raise RuntimeError("chromium, chromedriver or selenium is missing")
    browser, driver_path = found
    profile = tempfile.mkdtemp(prefix="cnnlens-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def file_url(path: str | os.PathLike) -> str:
    return Path(path).resolve().as_uri()


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE (errors) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def broken_images(driver) -> list[str]:
    """Images in the page that did not load (not complete or naturalWidth 0): their alt texts."""
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.alt || i.src.slice(0, 40));")


def wait_ready(driver, timeout: float = 20.0) -> None:
    """Wait until the page's script has built the page (``body[data-ready]``) and every image has decoded."""
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return document.body && document.body.getAttribute('data-ready') === '1' && "
        "Array.from(document.images).every(i => i.complete);"))


def full_page_png(driver, path: str | os.PathLike, width: int | None = None, max_height: int = 4000) -> Path:
    """A screenshot of the whole page (beyond the viewport, up to ``max_height`` px) as PNG."""
    import base64
    size = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];")
    w = width or int(size[0])
    h = min(int(size[1]), max_height)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
    path = Path(path)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
