"""Headless Chromium for the playground tests: Debian's `chromium` and `chromium-driver` driven
by Selenium. Nothing is downloaded: the driver's path is given, so Selenium Manager never runs.

The flags keep the browser off the network except for the page under test (this machine's
closed network refuses its background connections, which would otherwise stall it).
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",  # as root, in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 60  # s: page loads and scripts; every wait in a test has its own deadline too


@contextlib.contextmanager
def chromium(workdir: Path, size: tuple[int, int] = (1280, 860)) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own profile under `workdir`), quit on exit."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={workdir / 'profile'}"]:
        options.add_argument(flag)
    options.add_argument("--window-size={},{}".format(*size))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to read the console
    service = Service(CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(TIMEOUT)
        driver.set_script_timeout(TIMEOUT)
        yield driver
    finally:
        driver.quit()  # ends the browser and the chromedriver process Selenium started


def console_problems(driver: webdriver.Chrome) -> list[str]:
    """Console lines that mean the page broke: CSP refusals and uncaught script errors (failed
    requests, like an expected 401, are the API speaking and are left out)."""
    lines = [entry["message"] for entry in driver.get_log("browser")]
    bad = ("Content Security Policy", "Refused to", "Uncaught")
    return [line for line in lines if any(b in line for b in bad)]
