"""The operator console in a real browser (headless Chromium, Selenium) against the local host,
the fake Azure and Azurite: one stack and one browser for the module.

The runs page, a run's page and its timeline, "check" and "cancel" inside and outside the
window (and what the fake Azure received), the anti-forgery check, and an event with markup and
script in every string field shown as text.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from azure.storage.queue import QueueClient
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sandbox.browser import headless_chromium
from sandbox.fake_azure.model import MaintenanceRun
from sandbox.stack import PRE, Stack, running_stack
from tests.e2e.test_maintenance_runs import FLEET, STOPPED, WEB, deliver_ok, e2e_scenario

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

TASK_QUEUE = "maintenance-tasks"
HOSTILE = '"><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(e2e_scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def console_url(stack: Stack, page: str = "", **params: str) -> str:
    query = urllib.parse.urlencode({**params, "code": stack.host.function_key})
    return f"{stack.host.url}/api/console{'/' + page if page else ''}?{query}"


def cancels_sent(stack: Stack, run: MaintenanceRun) -> int:
    return len(stack.fake.requests_matching("PUT", rf"applyUpdates/{run.name}$"))


def open_run(browser: WebDriver, stack: Stack, run: MaintenanceRun) -> None:
    """From the runs page, follow the run's link, as an operator would."""
    browser.get(console_url(stack))
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{run.correlation_id}"]')
    row.find_element(By.CSS_SELECTOR, "a.run-link").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "countdown"))


def answer(browser: WebDriver, heading: str = "Check (dry run):") -> dict[str, str]:
    """The cancel API's answer shown on the page that came back, once its heading is there."""

    def shown(b: WebDriver) -> dict[str, str] | bool:
        box = b.find_element(By.ID, "cancel-answer")
        if not box.find_element(By.TAG_NAME, "h3").text.startswith(heading):
            return False
        return {
            "status": box.get_attribute("data-status") or "",
            "outcome": box.get_attribute("data-outcome") or "",
            "text": box.text,
        }

    found = WebDriverWait(
        browser, 30, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(shown)
    assert isinstance(found, dict)
    return found


def no_script_ran(browser: WebDriver) -> None:
    assert browser.execute_script("return window.__pwned === undefined") is True
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    scripts = browser.find_elements(By.CSS_SELECTOR, "script")
    assert [urllib.parse.urlsplit(s.get_attribute("src") or "").path for s in scripts] == [
        "/api/console/static/console.js"
    ]
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []


def test_the_runs_page_leads_to_a_run_whose_timeline_shows_what_the_app_did(
    stack: Stack, browser: WebDriver
) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    report = stack.run_report(run)

    browser.get(console_url(stack))
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{run.correlation_id}"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "weekly" and cells[2] == run.name
    assert "UTC" in cells[3] and "local" in cells[3]  # console.js filled in the local time
    assert cells[5] == report["run"]["status"]
    assert cells[6] == "Passed"
    # Machines, to start, started, left alone, skipped, failed, stopped.
    assert cells[7:14] == ["5", "3", "3", "1", "1", "0", "0"]
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-refresh-seconds")

    open_run(browser, stack, run)
    assert run.name in browser.find_element(By.TAG_NAME, "h1").text
    marks = {
        m.get_attribute("data-mark")
        for m in browser.find_elements(By.CSS_SELECTOR, "svg.timeline [data-mark]")
    }
    assert {"t-40", "pre-event", "start-batch-1", "t-15", "window-opens", "window-closes", "t"} <= (
        marks
    )
    rows = {
        g.get_attribute("data-machine"): g.get_attribute("data-action")
        for g in browser.find_elements(By.CSS_SELECTOR, "svg.timeline g.machine")
    }
    expected = {m["resourceId"].rsplit("/", 1)[-1]: m["action"] for m in report["machines"]}
    assert rows == expected
    assert rows[WEB.rsplit("/", 1)[-1]] == "LeftAlone"
    assert {rows[m.rsplit("/", 1)[-1]] for m in STOPPED} == {"Started"}
    started_steps = browser.find_elements(
        By.CSS_SELECTOR, 'svg.timeline circle[data-step="Started"]'
    )
    assert len(started_steps) == 3
    download = browser.find_element(By.CSS_SELECTOR, "a.report-download")
    assert "/api/console/report" in (download.get_attribute("href") or "")


def test_check_and_cancel_inside_the_window_reach_azure_once(
    stack: Stack, browser: WebDriver
) -> None:
    run = stack.schedule("weekly", [WEB], timedelta(minutes=30))
    deliver_ok(stack, PRE, run)
    stack.settle()
    open_run(browser, stack, run)
    countdown = browser.find_element(By.ID, "countdown")
    assert countdown.get_attribute("data-state") == "Open"
    assert re.match(r"Open now: closes in \d+ min \d\d s\.", countdown.text)
    before = countdown.text
    WebDriverWait(browser, 5).until(lambda b: b.find_element(By.ID, "countdown").text != before)

    browser.find_element(By.ID, "check-button").click()
    checked = answer(browser)
    assert checked["status"] == "200" and checked["outcome"] == "WouldCancel"
    assert "a cancel would be sent" in checked["text"]
    assert cancels_sent(stack, run) == 0

    # The browser will not send the cancel without a reason and the confirmation.
    browser.find_element(By.ID, "cancel-button").click()
    assert browser.find_element(By.ID, "cancel-answer").get_attribute("data-outcome") == (
        "WouldCancel"
    )
    browser.find_element(By.ID, "cancel-reason").send_keys("console: bad KB <b>5031</b>")
    browser.find_element(By.ID, "cancel-confirm").click()
    browser.find_element(By.ID, "cancel-button").click()
    cancelled = answer(browser, "Cancel:")
    assert cancelled["status"].startswith("2")
    assert cancelled["outcome"] in {"Cancelled", "CancelRequested"}
    assert cancels_sent(stack, run) == 1
    assert stack.fake.model.run_status(run.correlation_id) == "Cancelled"
    audit = browser.find_element(By.CSS_SELECTOR, "table.audit").text
    assert "console: bad KB <b>5031</b>" in audit  # the reason, as text
    assert "function key" in audit


def test_check_and_cancel_outside_the_window_are_refused_with_its_bounds(
    stack: Stack, browser: WebDriver
) -> None:
    run = stack.schedule("weekly", [WEB], timedelta(minutes=5))
    deliver_ok(stack, PRE, run)
    stack.settle()
    open_run(browser, stack, run)
    assert browser.find_element(By.ID, "countdown").get_attribute("data-state") == "Closed"

    browser.find_element(By.ID, "check-button").click()
    checked = answer(browser)
    assert checked["status"] == "409" and checked["outcome"] == "TooLate"
    assert "Too late to cancel" in checked["text"]
    assert "Window closes" in checked["text"]

    browser.find_element(By.ID, "cancel-reason").send_keys("too late?")
    browser.find_element(By.ID, "cancel-confirm").click()
    browser.find_element(By.ID, "cancel-button").click()
    refused = answer(browser, "Cancel:")
    assert refused["status"] == "409" and refused["outcome"] == "TooLate"
    assert cancels_sent(stack, run) == 0


def test_a_cancel_posted_from_another_site_is_refused_before_azure_is_asked(
    stack: Stack, browser: WebDriver
) -> None:
    run = stack.schedule("weekly", [WEB], timedelta(minutes=30))
    deliver_ok(stack, PRE, run)
    stack.settle()
    url = console_url(stack, "cancel")
    form = {"run": run.correlation_id, "intent": "cancel", "reason": "x", "confirm": "yes"}
    # No cookie at all, as a page elsewhere would post it.
    no_cookie = stack.session.post(url, data={**form, "csrf": "A" * 43}, timeout=30)
    assert no_cookie.status_code == 403
    # A cookie and a different token in the form.
    mismatch = stack.session.post(
        url,
        data={**form, "csrf": "A" * 43},
        headers={"Cookie": "console_csrf=" + "B" * 43},
        timeout=30,
    )
    assert mismatch.status_code == 403
    # The right pair, but the browser says the form came from another site.
    cross_site = stack.session.post(
        url,
        data={**form, "csrf": "A" * 43},
        headers={"Cookie": "console_csrf=" + "A" * 43, "Sec-Fetch-Site": "cross-site"},
        timeout=30,
    )
    assert cross_site.status_code == 403
    other_origin = stack.session.post(
        url,
        data={**form, "csrf": "A" * 43},
        headers={"Cookie": "console_csrf=" + "A" * 43, "Origin": "https://evil.example"},
        timeout=30,
    )
    assert other_origin.status_code == 403
    assert "cross-site" in other_origin.text
    assert cancels_sent(stack, run) == 0


def test_an_event_with_markup_and_script_in_every_string_field_renders_as_text(
    stack: Stack, browser: WebDriver
) -> None:
    run = stack.schedule("weekly", [WEB], timedelta(minutes=31))
    event = stack.event(PRE, run)
    # An event the app takes in, with markup in every free-text field it keeps or ignores.
    for key in ("id", "subject", "dataVersion", "metadataVersion"):
        event[key] = HOSTILE
    event["data"]["Extra" + HOSTILE] = HOSTILE
    # And one it refuses: markup everywhere.
    refused = stack.event(PRE, run)
    # (The eventTime stays a time: the host's Event Grid extension turns the delivery away
    # with a 400 before any function otherwise, as Azure's does.)
    for key in ("id", "topic", "subject", "eventType", "dataVersion"):
        refused[key] = HOSTILE
    for key in list(refused["data"]):
        refused["data"][key] = HOSTILE
    for sent in (event, refused):
        stack.session.post(
            stack.host.webhook_url("on_pre_maintenance_event"),
            json=[sent],
            headers={"aeg-event-type": "Notification"},
            timeout=30,
        )
    stack.settle()

    browser.get(console_url(stack))
    no_script_ran(browser)
    open_run(browser, stack, run)
    no_script_ran(browser)
    # The accepted event's id is listed among the events received, as text.
    assert HOSTILE in browser.find_element(By.CSS_SELECTOR, "table.events").text
    browser.get(console_url(stack, "refused"))
    no_script_ran(browser)
    # The refused event is listed, what came shown as text.
    refused_rows = browser.find_elements(By.CSS_SELECTOR, "table.refused-events tr.refused")
    assert refused_rows
    assert "<script>window.__pwned=1</script>" in refused_rows[0].text
    # The runs page points at it.
    browser.get(console_url(stack))
    assert "were refused recently" in browser.find_element(By.TAG_NAME, "main").text


def test_check_before_the_window_opens_is_refused_with_a_countdown_to_it(
    stack: Stack, browser: WebDriver
) -> None:
    tasks = QueueClient.from_connection_string(stack.storage_connection_string, TASK_QUEUE)
    early = stack.schedule("weekly", [WEB], timedelta(minutes=60))
    try:
        deliver_ok(stack, PRE, early)  # recorded before the answer; preparation waits for T-40
        open_run(browser, stack, early)
        countdown = browser.find_element(By.ID, "countdown")
        assert countdown.get_attribute("data-state") == "TooEarly"
        assert re.match(r"Not open yet: opens in 1\d min \d\d s\.", countdown.text)
        browser.find_element(By.ID, "check-button").click()
        too_early = answer(browser)
        assert too_early["status"] == "409" and too_early["outcome"] == "TooEarly"
        assert "Too early to cancel" in too_early["text"]
        assert cancels_sent(stack, early) == 0
    finally:
        # The preparation task waits, invisible, until T-40: it would keep the queue that the
        # whole session's stacks share busy for the tests that follow.
        tasks.clear_messages()
