"""Headless Chromium for the console's browser tests and screenshots: Debian's `chromium` and
`chromium-driver` packages driven by Selenium, never a browser downloaded at run time."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed."""


@contextlib.contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[WebDriver]:
    """A Selenium WebDriver for a headless Chromium that talks to loopback only."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or CHROMIUM)
    driver_path = (
        CHROMEDRIVER if CHROMEDRIVER.exists() else Path(shutil.which("chromedriver") or "")
    )
    if not binary.exists() or not driver_path.is_file():
        raise BrowserMissing(
            "headless Chromium is needed: `make test` installs Debian's chromium and "
            "chromium-driver (apt-get), or install them yourself"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--lang=en-GB",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
