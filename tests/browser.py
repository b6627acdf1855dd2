"""Headless Chromium for the browser tests, with the flags that keep it off the network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)


def chrome(width: int = 1600, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium that can reach 127.0.0.1 and nothing else."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_window_size(width, height)
    return driver


def wait_until(
    driver: webdriver.Chrome,
    condition: Callable[[webdriver.Chrome], Any],
    timeout: float,
    what: str,
) -> Any:
    """Poll ``condition(driver)`` until truthy; elements re-rendered by a refresh are retried.
    On timeout, fail with the browser's console log."""
    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=[StaleElementReferenceException, NoSuchElementException],
    )
    try:
        return wait.until(lambda d: condition(d) or None)
    except TimeoutException as exc:
        logs = "; ".join(e["message"] for e in driver.get_log("browser"))[:2000]
        raise AssertionError(f"timed out waiting for {what}; browser log: {logs}") from exc


def click(driver: webdriver.Chrome, css: str, what: str, timeout: float = 20) -> None:
    """Click an element like a user, retrying if a refresh replaced it in between."""

    def attempt(d: webdriver.Chrome) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait_until(driver, attempt, timeout, what)
