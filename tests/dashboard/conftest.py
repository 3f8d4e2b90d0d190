"""Fixtures of the dashboard's tests: both servers, and a real headless browser."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.emulator.server import RestServer
from kombu_appengine.gateway.auth import TokenInfoAuthenticator
from kombu_appengine.gateway.local import LocalGateway
from tests.support.helpers import MakeServer
from tests.support.oauth_server import OAuthServer

#: The application both servers serve.
APP = "test-app"
#: Their queues: one with a retry limit, one held to an ACL.
QUEUES = (
    "pull-queue",
    QueueConfig("limited", max_leases=3),
    QueueConfig("guarded", consumer_emails=["worker@example.com"], producer_emails=["app@example.com"]),
)
#: A service account the guarded gateway lets use every queue.
ROBOT = "robot@test-app.iam.gserviceaccount.com"
#: The system's browser and its driver (Debian's chromium and chromium-driver).
CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
#: Why the browser tests did not run, when they cannot (scripts/test prints the same line).
NO_BROWSER = (
    f"browser tests: NOT RUN — {CHROMIUM} or {CHROMEDRIVER} missing; apt-get install chromium chromium-driver"
)
#: What chromium needs to start headless on a closed network, as root.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


@pytest.fixture
def server(make_server: MakeServer) -> RestServer:
    """The emulator or the gateway (each test runs on both, see the root conftest), serving :data:`APP`."""
    return make_server(queues=QUEUES, project=APP)


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Callable[[], Any]]:
    """Start headless chromium through chromedriver: ``browser()`` gives a
    Selenium driver, quit at teardown. Skipped, never passed, without them."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def start() -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        # A fresh profile each time: nothing of another run's session storage.
        options.add_argument(f"--user-data-dir={tmp_path / f'profile-{len(drivers)}'}")
        # The driver named explicitly: Selenium then downloads nothing.
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def guarded_gateway(oauth: OAuthServer) -> Iterator[LocalGateway]:
    """A gateway that verifies bearer tokens at the OAuth server's token-info endpoint."""
    authenticator = TokenInfoAuthenticator(oauth.tokeninfo_uri, allowed_service_accounts=[ROBOT])
    with LocalGateway(QUEUES, project=APP, authenticator=authenticator) as running:
        yield running
