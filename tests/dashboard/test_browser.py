"""The dashboard in a real browser (headless chromium driven by Selenium), on real servers.

Every wait is an explicit wait for a condition of the page; what the page
shows is read in one script call, so a refresh redrawing it in between
cannot make a test flaky.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import pytest
from kombu import Connection

from kombu_appengine.emulator import Emulator, QueueConfig
from tests.dashboard.conftest import APP, ROBOT
from tests.support.dashboard import exists, insert, lease, task_ids
from tests.support.helpers import ROOT, MakeEmulator

#: Where the screenshots go (build/ is ignored by git).
SCREENSHOTS = ROOT / "build"
#: Longest wait for the page to show something: a deadline, not a measure.
WAIT = 30
#: The project the transport names on an emulator unless told otherwise.
EMULATOR_PROJECT = "emulator"
#: A payload that would run script if the page put it in as HTML.
HOSTILE = b"<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
#: The page's key for the access token in sessionStorage.
TOKEN_KEY = "pullqueue-dashboard-token"


def wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait until ``condition(driver)`` is true, at most :data:`WAIT` seconds."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiter = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException])
    return waiter.until(condition, message=f"waiting for {what}")


def text(driver: Any, selector: str) -> str | None:
    """The text of the first element ``selector`` finds, or ``None``: read at once."""
    found = driver.execute_script(
        "const node = document.querySelector(arguments[0]); return node ? node.textContent : null;", selector
    )
    return found if found is None else str(found)


def count(driver: Any, selector: str) -> int:
    return int(driver.execute_script("return document.querySelectorAll(arguments[0]).length;", selector))


def click_and_confirm(driver: Any, selector: str) -> None:
    """Click a button that asks to confirm, and say yes.

    Clicked from a timer of the page, so the script call returns before the
    confirmation blocks the page; the element is found and clicked in the
    page, where no redraw can come between.
    """
    from selenium.webdriver.support import expected_conditions

    clicked = driver.execute_script(
        "const node = document.querySelector(arguments[0]);"
        "if (!node) return false; setTimeout(() => node.click(), 0); return true;",
        selector,
    )
    assert clicked, f"no {selector} on the page"
    wait(driver, expected_conditions.alert_is_present(), f"the confirmation of {selector}")
    driver.switch_to.alert.accept()


def screenshot(driver: Any, name: str) -> pathlib.Path:
    """Save the window as ``build/NAME`` and say where."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), path
    print(f"dashboard screenshot: {path}")
    return path


def stat(queue: str, name: str) -> str:
    return f'[data-queue="{queue}"] [data-stat="{name}"]'


def row(task: str) -> str:
    return f'tr[data-task="{task}"]'


# -- the emulator ----------------------------------------------------------------------


@pytest.fixture
def filled_emulator(make_emulator: MakeEmulator) -> tuple[Emulator, dict[str, str]]:
    """An emulator for any project, filled through the API as users fill it; the tasks' names by kind."""
    emulator = make_emulator(queues=["pull-queue", QueueConfig("limited", max_leases=3)])
    names = {
        "json": insert(
            emulator,
            b'{"image": "cat.png", "sizes": [64, 128]}',
            EMULATOR_PROJECT,
            "pull-queue",
            tag="images",
        )["id"],
    }
    options = {"api_endpoint": emulator.url}
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as conn:
        conn.SimpleQueue("pull-queue").put({"greeting": "hello from kombu"})
    [kombu_task] = [
        name for name in task_ids(emulator, EMULATOR_PROJECT, "pull-queue") if name != names["json"]
    ]
    names["kombu"] = kombu_task
    names["binary"] = insert(
        emulator, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", EMULATOR_PROJECT, "pull-queue"
    )["id"]
    names["hostile"] = insert(emulator, HOSTILE, EMULATOR_PROJECT, "pull-queue", tag="<b>bold</b>")["id"]
    names["limited"] = insert(emulator, b"7", EMULATOR_PROJECT, "limited", id="limited-task")["id"]
    assert lease(emulator, EMULATOR_PROJECT, "pull-queue", 1) == [names["json"]]
    return emulator, names


def test_the_emulators_dashboard_shows_refreshes_deletes_and_purges(browser, filled_emulator):
    emulator, names = filled_emulator
    driver = browser()
    driver.get(emulator.url + "/")
    wait(driver, lambda d: text(d, stat("pull-queue", "totalTasks")) == "4", "the queue's four tasks")

    # The queues and their stats.
    assert text(driver, '[data-project="emulator"] h2') == "Project emulator"
    assert text(driver, stat("pull-queue", "leasedNow")) == "1"
    assert text(driver, stat("pull-queue", "leasedLastMinute")) == "1"
    assert text(driver, stat("pull-queue", "leasedLastHour")) == "1"
    assert text(driver, stat("pull-queue", "maxLeases")) == "none"
    assert text(driver, stat("pull-queue", "oldestTask")) not in ("–", None)
    heads = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((th) => [th.textContent, th.title]);",
        '[data-queue="pull-queue"] table.stats th',
    )
    # The API's oldestTask is the earliest ETA: the longest wait, not the oldest enqueue.
    assert [name for name, _ in heads][:4] == ["Tasks", "Leased now", "Longest wait", "Leased last minute"]
    assert "since its lease ran out or it was handed back" in heads[2][1]
    assert text(driver, stat("limited", "totalTasks")) == "1"
    assert text(driver, stat("limited", "maxLeases")) == "3"

    # The tasks: tag, retries, lease, payload.
    leased = row(names["json"])
    assert text(driver, f"{leased} .tag") == "images"
    assert text(driver, f"{leased} .retries") == "1"
    assert text(driver, f"{leased} .lease").startswith("leased, expires in ")
    assert '"image": "cat.png"' in text(driver, f"{leased} pre.preview")
    kombu = row(names["kombu"])
    assert text(driver, f"{kombu} .lease") == "available"
    assert text(driver, f"{kombu} .retries") == "0"
    assert text(driver, f"{kombu} .label").startswith("kombu message, application/json")
    assert '"greeting": "hello from kombu"' in text(driver, f"{kombu} pre.preview")
    binary = row(names["binary"])
    assert text(driver, f"{binary} .label").startswith("binary, ")
    assert text(driver, f"{binary} pre.preview").startswith("00000000  89 50 4e 47 0d 0a 1a 0a")

    # Nothing a payload or a tag holds becomes HTML.
    hostile = row(names["hostile"])
    assert text(driver, f"{hostile} pre.preview") == HOSTILE.decode()
    assert text(driver, f"{hostile} .tag") == "<b>bold</b>"
    assert count(driver, "#projects img, #projects script, #projects b") == 0
    assert driver.title == "Pull queues"
    screenshot(driver, "dashboard.png")

    # It refreshes on its own: a new task shows up, with no reload of the page.
    driver.execute_script("window.notReloaded = true;")
    insert(emulator, b'{"fresh": true}', EMULATOR_PROJECT, "pull-queue", id="fresh-task")
    wait(driver, lambda d: count(d, row("fresh-task")) == 1, "the new task")
    assert driver.execute_script("return window.notReloaded === true;")

    # Deleting one task deletes it, and only it.
    click_and_confirm(driver, f"{row('fresh-task')} button.delete")
    wait(driver, lambda d: count(d, row("fresh-task")) == 0, "the deleted task to go")
    assert not exists(emulator, EMULATOR_PROJECT, "pull-queue", "fresh-task")
    assert len(task_ids(emulator, EMULATOR_PROJECT, "pull-queue")) == 4

    # Purging a queue empties it, and no other.
    click_and_confirm(driver, '[data-queue="pull-queue"] button.purge')
    wait(driver, lambda d: text(d, stat("pull-queue", "totalTasks")) == "0", "the purged queue")
    assert task_ids(emulator, EMULATOR_PROJECT, "pull-queue") == []
    assert task_ids(emulator, EMULATOR_PROJECT, "limited") == [names["limited"]]
    assert text(driver, '[data-queue="pull-queue"] .more') == "No tasks."
    assert text(driver, "#error") == ""


# -- the gateway -----------------------------------------------------------------------


def sign_in(driver: Any, token: str) -> None:
    field = driver.find_element("id", "token")
    field.clear()
    field.send_keys(token)
    driver.find_element("id", "use-token").click()


def test_the_gateways_dashboard_shows_data_only_for_a_valid_token_and_changes_nothing(
    browser, guarded_gateway, oauth
):
    robot = {"Authorization": f"Bearer {oauth.access_token_for(ROBOT)}"}
    guarded = insert(guarded_gateway, b'{"order": 42}', APP, "guarded", headers=robot, tag="orders")["id"]
    insert(guarded_gateway, b"not for the worker", APP, "pull-queue", headers=robot)
    driver = browser()
    driver.get(guarded_gateway.url + "/")
    wait(driver, lambda d: d.find_element("id", "login").is_displayed(), "the request for a token")
    assert count(driver, "[data-queue]") == 0
    assert text(driver, "#mode") == "read-only"

    sign_in(driver, "ya29.not-a-token")
    wait(driver, lambda d: "refused" in (text(d, "#login-error") or ""), "the refusal of a bad token")
    assert count(driver, "[data-queue]") == 0

    worker = oauth.access_token_for("worker@example.com")
    sign_in(driver, worker)
    wait(driver, lambda d: count(d, row(guarded)) == 1, "the guarded queue's task")
    assert not driver.find_element("id", "login").is_displayed()
    assert text(driver, f"{row(guarded)} .tag") == "orders"
    assert '"order": 42' in text(driver, f"{row(guarded)} pre.preview")
    assert text(driver, stat("guarded", "totalTasks")) == "1"
    # Only the queues the worker's ACL allows; no way to change anything.
    assert count(driver, '[data-queue="pull-queue"], [data-queue="limited"]') == 0
    assert text(driver, "#hidden-queues").startswith("2 queues are not shown")
    assert count(driver, "button.delete, button.purge") == 0
    assert driver.execute_script("return sessionStorage.getItem(arguments[0]);", TOKEN_KEY) == worker
    screenshot(driver, "dashboard-gateway.png")

    # Forgetting the token hides the data again.
    driver.find_element("id", "forget-token").click()
    wait(driver, lambda d: d.find_element("id", "login").is_displayed(), "the request for a token again")
    assert count(driver, "[data-queue]") == 0
    assert driver.execute_script("return sessionStorage.getItem(arguments[0]);", TOKEN_KEY) is None
