"""The report in a real browser: headless Debian Chromium driven by Playwright.

Opens the report of a real tiny run (plus one trajectory with injected HTML), checks that subgoal
segments, the credit-assignment colouring and the learning curves are visible, that filters work,
and that the injected markup neither runs nor renders. Saves a screenshot (under
``$HIPER_ARTIFACTS`` when set, else the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hiper.viz import build_report, load_view_data
from hiper.viz.data import TRAJ_FIELDS
from tests.conftest import require
from tests.helpers import INJECTED_OBSERVATION, INJECTED_RESPONSE

CHROMIUM = os.environ.get("HIPER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    require(
        Path(CHROMIUM).is_file(),
        f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set HIPER_CHROMIUM)",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1300, "height": 1400})
    errors: list[str] = []
    dialogs: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def on_dialog(d):
        dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.errors, pg.dialogs = errors, dialogs
    yield pg
    pg.close()


def _open(page, report: Path) -> None:
    page.goto(report.as_uri())
    page.wait_for_function("window.hiperReady !== undefined", timeout=10_000)


def _screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("HIPER_ARTIFACTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_segments_colouring_and_plots_are_visible(page, viewer_run, tmp_path):
    report = build_report(viewer_run, tmp_path / "r")
    _open(page, report)
    data = load_view_data(viewer_run)
    trajs = data["trajectories"]
    # the first trajectory is shown on load; it has at least one segment with turns
    page.wait_for_selector("#detail .segment", state="visible")
    assert page.locator("#detail .segment").count() >= 1
    assert page.locator("#detail .turn").count() == len(trajs[0][TRAJ_FIELDS.index("turns")])
    # learning curves: one SVG per panel, drawn with real size and lines
    plots = page.locator("svg.plot")
    assert plots.count() >= 5
    box = plots.first.bounding_box()
    assert box["width"] > 200 and box["height"] > 150
    assert page.locator("svg.plot polyline").count() >= 5
    # filters: training trajectories only, then failures among them
    split = TRAJ_FIELDS.index("split")
    n_train = sum(data["strings"][t[split]] == "train" for t in trajs)
    page.select_option("#f-split", "train")
    assert page.evaluate("window.hiper.count()") == n_train
    assert page.locator("#count").inner_text().startswith(f"{n_train} of {len(trajs)}")
    # a training trajectory's tokens are coloured by the advantage they received (the tiny
    # model's responses are mostly unparsable: all their tokens get A^L)
    page.click("#traj-rows tr:first-child")
    blocks = page.locator("#detail .blk[data-level='A^L'][data-adv]")
    assert blocks.count() >= 1
    colours = blocks.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert all(c.startswith("rgba(") and c != "rgba(0, 0, 0, 0)" for c in colours)
    assert " A^L = " in blocks.first.get_attribute("title")
    # the lens can switch the A^L colouring off
    page.select_option("#f-lens", "switch")
    off = page.locator("#detail .blk[data-level='A^L'][data-adv]").first
    assert off.evaluate("e => getComputedStyle(e).backgroundColor") == "rgba(0, 0, 0, 0)"
    shot = _screenshot_dir(tmp_path) / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.errors == [] and page.dialogs == []


def test_injected_markup_renders_as_text_and_never_runs(page, injected_run, tmp_path):
    report = build_report(injected_run, tmp_path / "r")
    _open(page, report)
    page.select_option("#f-type", "injected")
    assert page.evaluate("window.hiper.count()") == 1
    page.click("#traj-rows tr:first-child")
    detail = page.locator("#detail")
    text = detail.inner_text()
    assert INJECTED_RESPONSE in text and INJECTED_OBSERVATION in text
    assert detail.locator("img").count() == 0 and detail.locator("b").count() == 0
    assert page.locator("script").count() == 2  # the data element and the viewer's own script
    assert page.evaluate("window.__xss === undefined")
    # the invalid turn (no blocks parsed) is flagged and all of it gets A^L; the valid turn's
    # blocks get A^S (0.3) and A^L (-1.5), its KEEP-copied subgoal none
    assert detail.locator(".turn.invalid").count() == 1
    assert detail.locator(".turn.invalid .blk-other[data-adv='1.5']").count() == 1
    assert detail.locator(".blk-switch[data-adv='0.3']").count() == 1
    assert detail.locator(".blk-action[data-adv='-1.5']").count() == 1
    assert detail.locator(".blk-subgoal.no-adv").count() == 1
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "viewer-injection.png"))
    assert page.dialogs == []
