"""The campaign report opened in a real browser: Debian's headless Chromium (installed by
`make test`), driven by Selenium through Debian's ChromeDriver. A screenshot is kept in
out/test-artifacts/."""
from __future__ import annotations

import json
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from farm import cli
from tests.test_qa import _assert_self_contained
from tests.test_render import REPO
from tests.test_runtime import _campaign, _drawing

pytestmark = pytest.mark.usefixtures("ray_cluster")
SCREENSHOT = REPO / "out" / "test-artifacts" / "campaign_report.png"


@pytest.fixture
def browser(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are missing: `make test` installs them"
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def _order(browser) -> list[str]:
    return [row.get_attribute("data-shot") for row in browser.find_elements(By.CSS_SELECTOR, "#shots tbody tr")]


def _images(browser) -> list[list]:
    return browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")


def test_campaign_report_in_headless_chromium(tmp_path, browser, capsys):
    shots = (
        _drawing("please", "gesture_asl_please.mkv")
        + _drawing("walk", "walk_two_people_toward_camera.gif", "char3").replace("}", ", overrides: [qa.max_jitter=0]}")
        + "  - {id: broken, motion: missing.mp4, character: nowhere.png}\n"
    )
    out = tmp_path / "out"
    assert cli.run(["submit", _campaign(tmp_path, shots), "-o", str(out)]) == 3  # one shot failed
    printed = capsys.readouterr().out  # results on stdout
    page = out / "c" / "report.html"
    assert f"report: {page}" in printed and "1 shot(s) need a re-render" in printed
    _assert_self_contained(page.read_text())
    doc = json.loads((out / "c" / "campaign.json").read_text())
    assert doc["counts"]["shots_flagged"] == 1

    browser.get(page.as_uri())
    # Flagged first, then failed, then the rest.
    assert _order(browser) == ["walk", "broken", "please"]
    assert "1 needs a re-render" in browser.find_element(By.ID, "flagged-count").text
    walk = browser.find_element(By.CSS_SELECTOR, "tr[data-shot=walk]").text
    assert "yes" in walk and "jitter" in walk
    assert "missing.mp4: file not found" in browser.find_element(By.CSS_SELECTOR, "tr[data-shot=broken]").text
    images = _images(browser)
    assert sorted(alt for _, _, alt in images) == ["please", "walk"]  # a thumbnail per rendered shot
    assert all(complete and width > 0 for complete, width, _ in images)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000

    # Sorting: by shot id, both ways; by a metric, empty cells (the failed shot) last.
    headers = {th.text.split("\n")[0].strip(" ⇅"): th for th in browser.find_elements(By.CSS_SELECTOR, "#shots th")}
    headers["shot"].click()
    assert _order(browser) == ["broken", "please", "walk"]
    headers["shot"].click()
    assert _order(browser) == ["walk", "please", "broken"]
    headers["frames"].click()
    assert _order(browser) == ["walk", "please", "broken"]  # 35 and 73 frames, then none

    # A shot id opens the shot's own report, with its verdict, plots and images.
    browser.find_element(By.LINK_TEXT, "walk").click()
    assert browser.current_url.endswith("/shots/walk/report.html")
    assert browser.find_element(By.ID, "verdict").text == "needs re-render"
    assert "jitter" in browser.find_element(By.ID, "reasons").text
    assert len(browser.find_elements(By.TAG_NAME, "svg")) == 4
    shot_images = _images(browser)
    assert len(shot_images) >= 4 and all(complete and width > 0 for complete, width, _ in shot_images)
