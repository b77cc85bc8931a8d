"""The campaign report opened in a real browser: Debian's headless Chromium (installed by
`make test`), driven by Selenium through Debian's ChromeDriver. A screenshot is kept in
out/test-artifacts/."""
from __future__ import annotations

import json
import shutil

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from farm import cli
from farm.bench import campaign_record, headless_chromium
from farm.report import PAGE_ROWS, write_campaign_report
from tests.test_qa import _assert_self_contained, campaign_rows
from tests.test_render import REPO
from tests.test_runtime import _campaign, _drawing

pytestmark = pytest.mark.usefixtures("ray_cluster")
SCREENSHOT = REPO / "out" / "test-artifacts" / "campaign_report.png"


@pytest.fixture
def browser(tmp_path):
    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "Debian's chromium and chromium-driver are missing: `make test` installs them"
    session = headless_chromium(tmp_path / "chromium")
    yield session
    session.quit()


def _order(browser) -> list[str]:
    return [row.get_attribute("data-shot") for row in browser.find_elements(By.CSS_SELECTOR, "#shots tbody tr")]


def _images(browser, within: str = "body") -> list[list]:
    return browser.execute_script("return Array.from(document.querySelectorAll(arguments[0] + ' img'))"
                                  ".map(i => [i.complete, i.naturalWidth, i.alt])", within)


def _thumbnails(browser, first: int) -> list[list]:
    """The table's thumbnails, the `first` of them loaded: they load lazily, as they come into view."""
    browser.execute_script("document.querySelector('#shots').scrollIntoView()")
    WebDriverWait(browser, 10).until(lambda b: all(complete for complete, _, _ in _images(b, "#shots")[:first]))
    return _images(browser, "#shots")


def _page_info(browser) -> str:
    return browser.find_element(By.ID, "page-info").text


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
    walk = browser.find_element(By.CSS_SELECTOR, "#shots tr[data-shot=walk]").text
    assert "yes" in walk and "jitter" in walk
    assert "missing.mp4: file not found" in browser.find_element(By.CSS_SELECTOR, "#shots tr[data-shot=broken]").text
    # The summary: counts by verdict and by reason, a histogram per metric, the worst shots.
    verdicts = {b.get_attribute("data-verdict"): b.text for b in browser.find_elements(By.CSS_SELECTOR, "#verdicts button")}
    assert verdicts == {"flagged": "1", "failed": "1", "passed": "1", "": "3"}
    assert [b.get_attribute("data-reason") for b in browser.find_elements(By.CSS_SELECTOR, "#reasons button")] == ["jitter"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.histogram svg rect")) >= 9
    lowest = sorted((r for r in doc["shots"] if r["status"] != "failed"), key=lambda r: r["pose_pck"])
    assert [r.get_attribute("data-shot") for r in browser.find_elements(By.CSS_SELECTOR, "#lowest tr[data-shot]")] \
        == [r["shot_id"] for r in lowest]
    assert "missing.mp4" in browser.find_element(By.CSS_SELECTOR, "#failed tr[data-shot=broken]").text
    images = _thumbnails(browser, 2)
    assert sorted(alt for _, _, alt in images) == ["please", "walk"]  # a thumbnail per rendered shot, from its folder
    assert all(complete and width > 0 for complete, width, _ in images)
    assert sorted(i.get_dom_attribute("src") for i in browser.find_elements(By.CSS_SELECTOR, "#shots img")) \
        == ["shots/please/thumb.jpg", "shots/walk/thumb.jpg"]
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

    # Filters: by verdict, by reason (the counts above set them too), by text.
    Select(browser.find_element(By.ID, "filter-verdict")).select_by_value("failed")
    assert _order(browser) == ["broken"] and _page_info(browser) == "shots 1–1 of 1 · page 1 of 1"
    browser.find_element(By.CSS_SELECTOR, "#reasons button[data-reason=jitter]").click()
    assert _order(browser) == ["walk"]
    browser.find_element(By.CSS_SELECTOR, "#verdicts button[data-verdict='']").click()
    browser.find_element(By.ID, "filter-text").send_keys("PLEA")
    assert _order(browser) == ["please"]
    browser.find_element(By.ID, "filter-text").clear()
    browser.find_element(By.ID, "filter-text").send_keys("file not found")
    assert _order(browser) == ["broken"]

    # A shot id opens the shot's own report, with its verdict, plots and images.
    browser.find_element(By.LINK_TEXT, "walk").click()
    assert browser.current_url.endswith("/shots/walk/report.html")
    assert browser.find_element(By.ID, "verdict").text == "needs re-render"
    assert "jitter" in browser.find_element(By.ID, "reasons").text
    assert len(browser.find_elements(By.TAG_NAME, "svg")) == 4
    shot_images = _images(browser)
    assert len(shot_images) >= 4 and all(complete and width > 0 for complete, width, _ in shot_images)


def test_campaign_report_pages_a_large_campaign(tmp_path, browser):
    """250 shots: a page of PAGE_ROWS rows at a time, filters over all of them, thumbnails loaded as
    their page is shown. The rows are a synthetic record (farm.bench), each with a real thumbnail."""
    doc = campaign_record(250)
    thumb = _real_thumbnail()
    for row in doc["shots"]:
        (tmp_path / "c" / "shots" / row["shot_id"]).mkdir(parents=True)
        (tmp_path / "c" / "shots" / row["shot_id"] / "thumb.jpg").write_bytes(thumb)
    page = write_campaign_report(tmp_path / "c" / "report.html", doc)
    rows = campaign_rows(page.read_text())
    browser.get(page.as_uri())
    assert _order(browser) == [r["shot_id"] for r in rows[:PAGE_ROWS]]
    assert _page_info(browser) == f"shots 1–{PAGE_ROWS} of 250 · page 1 of 3"
    assert browser.find_element(By.ID, "previous").get_attribute("disabled")
    browser.find_element(By.ID, "next").click()
    browser.find_element(By.ID, "next").click()
    assert _order(browser) == [r["shot_id"] for r in rows[2 * PAGE_ROWS:]]
    assert _page_info(browser) == f"shots {2 * PAGE_ROWS + 1}–250 of 250 · page 3 of 3"
    assert browser.find_element(By.ID, "next").get_attribute("disabled")
    images = _thumbnails(browser, 5)  # the ones in view; those below load as they are scrolled to
    assert len(images) == sum(r["thumb"] for r in rows[2 * PAGE_ROWS:]) > 5
    assert all(complete and width == 160 for complete, width, _ in images[:5])
    # A filter starts again from its first page.
    Select(browser.find_element(By.ID, "filter-verdict")).select_by_value("passed")
    passed = [r["shot_id"] for r in rows if r["verdict"] == "passed"]
    assert _order(browser) == passed[:PAGE_ROWS]
    assert _page_info(browser) == f"shots 1–{PAGE_ROWS} of {len(passed)} · page 1 of {-(-len(passed) // PAGE_ROWS)}"


def _real_thumbnail() -> bytes:
    """A shot's thumb.jpg as the farm writes it (write_shot_report's size and encoding)."""
    import cv2

    from farm.report import _jpeg
    from tests.test_render import MEDIA

    return _jpeg(cv2.cvtColor(cv2.imread(str(MEDIA / "childdrawing_char1.png")), cv2.COLOR_BGR2RGB), 160)
