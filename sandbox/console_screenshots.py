"""`make screenshots`: the console's runs page and a run page, photographed in headless Chromium
after `make run`'s four runs and one more run under way, into docs/."""

from __future__ import annotations

import sys
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.browser import headless_chromium
from sandbox.demo import DEMO_SETTINGS, Timeline, demo_scenario, play, vms_of
from sandbox.stack import PRE, Stack, running_stack

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WIDTH = 1400
MAX_HEIGHT = 2600


def console_url(stack: Stack, page: str = "", **params: str) -> str:
    """A console page of the stack, with the function key in `code` as an operator opens it."""
    query = urllib.parse.urlencode({**params, "code": stack.host.function_key})
    return f"{stack.host.url}/api/console{'/' + page if page else ''}?{query}"


def photograph(driver: WebDriver, path: Path) -> None:
    """The whole page (up to MAX_HEIGHT pixels) as a PNG."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(WIDTH, min(MAX_HEIGHT, height + 20))
    driver.save_screenshot(str(path))


def take(stack: Stack, driver: WebDriver, folder: Path) -> list[Path]:
    """A run under way (pre event in, window open), then the runs page and its run page with
    the answer of "check"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = stack.schedule("weekly-linux", vms_of(stack, "weekly-linux"), timedelta(minutes=32))
    stack.deliver(PRE, run)
    stack.settle(timeout=180)
    folder.mkdir(parents=True, exist_ok=True)
    runs_png, run_png = folder / "console-runs.png", folder / "console-run.png"
    driver.get(console_url(stack))
    photograph(driver, runs_png)
    driver.get(console_url(stack, "run", run=run.correlation_id))
    driver.find_element(By.ID, "check-button").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "cancel-answer"))
    photograph(driver, run_png)
    return [runs_png, run_png]


def main() -> int:
    timeline = Timeline()
    timeline.say("Starting Azurite, the fake Azure (demo fleet) and the local host ...")
    with running_stack(demo_scenario(0.5), settings=DEMO_SETTINGS) as stack:
        play(stack, timeline)
        timeline.say("Photographing the console ...")
        with headless_chromium() as driver:
            for path in take(stack, driver, DOCS):
                timeline.say(f"  {path.relative_to(ROOT)}")
    return 0 if timeline.all_held else 1


if __name__ == "__main__":
    sys.exit(main())
