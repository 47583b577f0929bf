"""The console in a real headless Chromium against a real ``recsys console`` process and real data.

Logs in through the form, loads every page, checks that the SVG plots are drawn (shapes present), that
the browser logged no error, follows the links (experiment detail, model version, the diff form), tabs
through the page with the keyboard, and saves screenshots (to the test's tmp dir; set
RECSYS_CONSOLE_SCREENSHOTS=DIR to keep them, e.g. docs/img). A missing browser fails the test with the
command that installs it: it never skips.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from .conftest import READ_KEY

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000")


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: the console's browser tests need Debian's chromium and "
                    "chromium-driver (`bash scripts/setup.sh` installs them, or `apt-get install -y chromium "
                    "chromium-driver`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _shot(driver, tmp_path: Path, name: str) -> Path:
    """Full-page screenshot through the DevTools protocol (the whole document, not just the viewport)."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path = tmp_path / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000, f"screenshot {name} is empty"
    keep = os.environ.get("RECSYS_CONSOLE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def _svgs(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def test_console_pages_in_a_real_browser(browser, console_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    # Without the key a page is the login form (HTTP 401); logging in sets the cookie and goes back.
    d.get(f"{console_server}/experiments")
    assert "Log in" in d.find_element(By.TAG_NAME, "h1").text
    d.find_element(By.ID, "key").send_keys(READ_KEY)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    assert d.current_url.endswith("/experiments"), d.current_url
    assert d.find_element(By.TAG_NAME, "h1").text == "Experiments"
    before_login = _errors(d)  # the browser reports the expected 401 of the first load, and nothing else
    assert len(before_login) == 1 and "401" in before_login[0]["message"], before_login

    # Experiments table: both experiments with layer, share, status, SRM and decision; readable without JS.
    rows = d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert [r.find_element(By.TAG_NAME, "th").text for r in rows] == ["ranker_rollout", "retrieval_probe"]
    first = rows[0].text
    assert "models" in first and "60%" in first and "running" in first and "ok" in first
    assert not _errors(d)

    # Keyboard: the first Tab reaches the skip link, the next ones the page navigation.
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Skip to content"
    d.switch_to.active_element.send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Experiments"

    # Detail page: the interval of every metric look by look against zero, the decision and the SRM verdict.
    d.find_element(By.LINK_TEXT, "ranker_rollout").click()
    assert d.find_element(By.TAG_NAME, "h1").text.startswith("ranker_rollout")
    plots = _svgs(d, "svg.interval-plot")
    assert len(plots) == 3, "one interval plot per metric (ctr, conversion, reward)"
    for svg in plots:
        assert svg.find_elements(By.CSS_SELECTOR, "polygon.cs-band"), "confidence band drawn"
        assert len(svg.find_elements(By.CSS_SELECTOR, "g.cs-look")) >= 3, "one whisker per look"
        assert svg.find_elements(By.CSS_SELECTOR, "line.cs-zero"), "zero line drawn"
        assert svg.size["width"] > 300 and svg.size["height"] > 150, "plot laid out at its size"
    text = d.find_element(By.TAG_NAME, "main").text
    assert "Decision:" in text and "Sample ratio (units in their assigned arm): ok" in text
    assert "Fallback/degraded rate" in text and "Frozen plan" in text
    # the reasons per arm (issue 23): the guardrail says why an arm was served worse, not only how often
    arms = {r.find_element(By.TAG_NAME, "th").text.split(" ")[0]: r.find_element(By.CSS_SELECTOR, "td.reasons").text
            for r in d.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=arms] tbody tr")}
    assert arms == {"control": "retrieval_shard_unavailable: 3", "treatment": "experiment_version_unavailable: 3"}
    assert not _errors(d)
    _shot(d, tmp_path, "console-experiment")

    # Downloads are linked from the page and answer JSON / CSV.
    links = {a.text: a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, ".downloads a")}
    headers = {"X-API-Key": READ_KEY}
    data = httpx.get(links["JSON"], headers=headers, timeout=10).json()
    assert data["name"] == "ranker_rollout" and data["metrics"][0]["comparisons"][0]["looks"]
    looks = httpx.get(links["CSV of every look"], headers=headers, timeout=10).text.splitlines()
    assert looks[0].startswith("experiment,metric,primary,treatment") and len(looks) > 3

    # Models: every model and version, promoted + in-experiment tags, gate result; then a version and a diff.
    d.find_element(By.LINK_TEXT, "Models").click()
    main = d.find_element(By.TAG_NAME, "main").text
    assert "ranker" in main and "two_tower" in main and "promoted" in main and "refused" in main
    ranker_v2 = d.find_element(By.XPATH, "//section[@aria-labelledby='model-ranker']//tbody/tr[1]").text
    assert ranker_v2.startswith("v2") and "ranker_rollout/treatment" in ranker_v2 and "refused" in ranker_v2
    tower_v1 = d.find_element(By.XPATH, "//section[@aria-labelledby='model-two_tower']//tbody/tr[2]").text
    assert tower_v1.startswith("v1") and "retrieval_probe/ann" in tower_v1 and "ranker_rollout" not in tower_v1
    _shot(d, tmp_path, "console-models")
    d.find_element(By.CSS_SELECTOR, "a[href='/models/ranker/v1']").click()
    gate = _svgs(d, "svg.ci-plot")
    assert gate and len(gate[0].find_elements(By.CSS_SELECTOR, "g.ci-row")) == 2
    assert not _errors(d)
    d.back()
    d.find_element(By.CSS_SELECTOR, "form[action='/models/ranker/diff'] button").click()
    WebDriverWait(d, 10).until(expected_conditions.url_contains("/models/ranker/diff?a=v1&b=v2"))
    diff_rows = d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert any(r.text.startswith("gate.metrics.recall@20.diff") for r in diff_rows)
    assert not _errors(d)

    # Serving: live numbers from the scraped registry, both time-series plots, the online store's health.
    d.find_element(By.LINK_TEXT, "Serving").click()
    refresh = d.find_element(By.CSS_SELECTOR, "meta[http-equiv='refresh']").get_attribute("content")
    assert refresh == "30"
    lines = _svgs(d, "svg.ts-plot polyline.ts-line")
    assert len(lines) == 2, d.find_element(By.TAG_NAME, "main").text
    main = d.find_element(By.TAG_NAME, "main").text
    assert "req/s" in main and "p95" in main and "ranker_unavailable" in main
    for stage in ("retrieval", "ranking", "hydration"):
        assert stage in main
    assert "5 entries not yet applied (2 pending, 3 undelivered" in main
    assert "Materialization version\n2" in main
    assert "retrieval=v2" in main
    assert not _errors(d)
    _shot(d, tmp_path, "console-serving")
    assert len(list(tmp_path.glob("*.png"))) == 3
