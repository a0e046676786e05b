"""The report in a real browser: headless Debian Chromium driven by Playwright.

Opens the report of a real tiny run (plus one trajectory with injected HTML), checks that subgoal
segments, the credit-assignment colouring and the learning curves are visible, that filters work,
and that the injected markup neither runs nor renders; on hand-made runs, the failure-mode filter,
the inline advantage values, the metric picker, smoothing, error bars, tick format and a two-run
comparison. Saves a screenshot (under
``$HIPER_ARTIFACTS`` when set, else the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hiper.viz import build_report, load_view_data
from hiper.viz.data import TRAJ_FIELDS
from hiper.viz.plots import learning_curves
from tests.conftest import require
from tests.helpers import INJECTED_OBSERVATION, INJECTED_RESPONSE
from tests.test_viewer import mode_trajectories, write_modes_run

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
    # it opens on the latest training iteration (its turns carry credit), its first trajectory
    split, it = TRAJ_FIELDS.index("split"), TRAJ_FIELDS.index("iteration")
    train = [t for t in trajs if data["strings"][t[split]] == "train"]
    latest = max(t[it] for t in train)
    first = next(t for t in train if t[it] == latest)
    assert page.input_value("#f-split") == "train"
    assert page.input_value("#f-iteration") == str(latest)
    page.wait_for_selector("#detail .segment", state="visible")
    assert page.locator("#detail .segment").count() >= 1
    assert page.locator("#detail .turn").count() == len(first[TRAJ_FIELDS.index("turns")])
    assert f"iteration {latest} · train" in page.locator("#detail .meta-line").inner_text()
    # learning curves: one SVG per panel, drawn with real size and lines
    plots = page.locator("#curves svg.plot")
    assert plots.count() == len(data["panels"]) >= 5
    box = plots.first.bounding_box()
    assert box["width"] > 200 and box["height"] > 150
    assert page.locator("svg.plot polyline").count() >= 5
    # filters: training trajectories of every iteration, then failures among them
    n_train = len(train)
    page.select_option("#f-iteration", "")
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
    page.select_option("#f-iteration", "")
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


def test_failure_mode_filter_marks_and_inline_values(page, tmp_path):
    run = write_modes_run(tmp_path / "run")
    _open(page, build_report(run, tmp_path / "r"))
    assert page.input_value("#f-iteration") == "1"  # the latest training iteration
    modes = list(mode_trajectories())
    assert page.evaluate("window.hiper.count()") == len(modes)
    for mode in modes:
        page.select_option("#f-mode", mode)
        assert page.evaluate("window.hiper.count()") == 1, mode
        row = page.locator("#traj-rows tr")
        assert row.locator("td.task").inner_text() == f"t/{mode}"
        if mode != "success":
            assert row.locator("td.modes").inner_text() == {"noop": "no-op"}.get(mode, mode)
    # every split: the evaluation has them too; the option names its count
    page.select_option("#f-split", "")
    page.select_option("#f-iteration", "")
    page.select_option("#f-mode", "loop")
    assert page.evaluate("window.hiper.count()") == 2
    assert "loop (2)" in page.locator("#f-mode").inner_text()
    # the loop's turns are marked, and no-op answers are
    page.select_option("#f-split", "train")
    page.click("#traj-rows tr:first-child")
    detail = page.locator("#detail")
    assert detail.locator(".turn.in-loop").count() == 3
    assert detail.locator(".turn.in-loop .loop-badge").first.inner_text() == "loop: repeated action"
    page.select_option("#f-mode", "noop")
    page.click("#traj-rows tr:first-child")
    assert detail.locator(".turn.noop").count() == 1
    assert detail.locator(".turn[data-turn='0'] .noop-badge").is_visible()
    page.select_option("#f-mode", "malformed")
    page.click("#traj-rows tr:first-child")
    assert detail.locator(".turn.invalid.noop .invalid-badge").count() == 1
    # advantage values are printed on each training turn, and the toggle hides them
    vals = detail.locator(".turn .adv-vals")
    assert vals.count() == 2 and vals.first.is_visible()
    assert vals.first.inner_text().split() == ["A^S", "-0.25", "A^H", "–", "A^L", "+0.50"]
    page.uncheck("#f-values")
    assert not vals.first.is_visible()
    page.check("#f-values")
    assert vals.first.is_visible()
    # evaluation turns carry no advantage: no values printed
    page.select_option("#f-split", "eval")
    page.click("#traj-rows tr:first-child")
    assert detail.locator(".adv-vals").count() == 0
    assert page.errors == [] and page.dialogs == []


def test_metric_picker_smoothing_error_bars_and_ticks(page, viewer_run, tmp_path):
    data = load_view_data(viewer_run)
    (run,) = data["runs"]
    plotted = {s["metric"] for p in learning_curves(run["metrics"]) for s in p["series"]}
    extra = sorted(set(run["metrics"]) - plotted)
    assert len(extra) > 20  # most logged metrics have no standard panel
    _open(page, build_report(viewer_run, tmp_path / "r"))
    options = page.locator("#metric-pick option").evaluate_all("os => os.map(o => o.value)")
    assert set(options) - {""} == set(run["metrics"])  # every logged metric can be picked
    # a metric no panel shows: its curve appears, one point per logged value
    m = next(k for k in extra if len(run["metrics"][k]) >= 2)
    assert page.locator("#picked svg.plot").count() == 0
    page.select_option("#metric-pick", m)
    chart = page.locator("#picked svg.plot")
    assert chart.get_attribute("data-title") == m and chart.get_attribute("data-series") == "1"
    assert chart.locator("circle").count() == len(run["metrics"][m])
    # eval/success carries error bars from eval/success_std
    page.select_option("#metric-pick", "eval/success")
    std = dict(map(tuple, run["metrics"]["eval/success_std"]))
    bars = sum(1 for v in std.values() if v > 0)
    assert page.locator("#picked path.errbar").count() == bars
    # smoothing (EMA): hand-computed on 1, 3, 2 with weight 0.5: 1, 2, 2
    got = page.evaluate("window.hiper.smooth([[0, 1], [1, 3], [2, 2]], 0.5)")
    assert got == [[0, 1], [1, 2], [2, 2]]
    points = "ls => ls.map(l => l.getAttribute('points'))"
    before = page.locator("svg.plot polyline.series").evaluate_all(points)
    page.fill("#smooth", "0.9")
    page.dispatch_event("#smooth", "input")
    assert page.locator("#smooth-value").inner_text() == "0.90"
    assert page.locator("#curves polyline.raw").count() >= 1
    after = page.locator("svg.plot polyline.series").evaluate_all(points)
    assert len(after) == len(before) and after != before  # every chart is smoothed
    # one tick format per axis: 0.000, 0.002, ... never 0.01 beside 8.0e-03
    fmt = "([lo, hi]) => { const t = window.hiper.niceTicks(lo, hi); const f = window.hiper.tickFormat(t); return t.map(f); }"
    assert page.evaluate(fmt, [0, 0.0095]) == ["0.000", "0.002", "0.004", "0.006", "0.008", "0.010"]
    assert page.evaluate(fmt, [0, 1]) == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert page.evaluate(fmt, [2e-5, 9e-5]) == ["2.0e-5", "4.0e-5", "6.0e-5", "8.0e-5", "1.0e-4"]
    for svg in page.locator("svg.plot").all():
        labels = svg.locator("text.ytick").evaluate_all("ts => ts.map(t => t.textContent)")
        decimals = {len(x.split(".")[1]) if "." in x and "e" not in x else -1 for x in labels}
        assert len(decimals) == 1, labels
        # the legend sits below the axis label, never over it
        axis = svg.locator("text.axis").bounding_box()
        for legend in svg.locator("text.legend").all():
            assert legend.bounding_box()["y"] >= axis["y"] + axis["height"]
    assert page.errors == [] and page.dialogs == []


def test_two_runs_compared_on_one_page(page, tmp_path):
    a = write_modes_run(tmp_path / "a" / "run")
    b = write_modes_run(tmp_path / "b" / "run", seed=0.5)
    _open(page, build_report([a, b], tmp_path / "r"))
    success = page.locator("#curves svg.plot[data-title='Success']")
    legend = success.locator("text.legend").evaluate_all("ts => ts.map(t => t.textContent)")
    assert legend == [
        "a/run · train/success",
        "a/run · eval/success",
        "b/run · train/success",
        "b/run · eval/success",
    ]
    # one colour per run, line style per split (train solid, eval dashed)
    lines = success.locator("polyline.series").evaluate_all(
        "ls => ls.map(l => [l.getAttribute('stroke'), l.getAttribute('stroke-dasharray')])"
    )
    assert lines[0][0] == lines[1][0] != lines[2][0] == lines[3][0]
    assert lines[0][1] == lines[2][1] == "" and lines[1][1] == lines[3][1] != ""
    # the picker overlays both runs
    page.select_option("#metric-pick", "custom/metric")
    picked = page.locator("#picked svg.plot")
    assert picked.get_attribute("data-series") == "2"
    assert picked.locator("text.legend").evaluate_all("ts => ts.map(t => t.textContent)") == [
        "a/run · custom/metric",
        "b/run · custom/metric",
    ]
    # the browser opens on the first run's latest training iteration and can switch runs
    assert page.locator("#f-run").is_visible() and page.input_value("#f-run") == "0"
    assert page.evaluate("window.hiper.count()") == len(mode_trajectories())
    page.select_option("#f-run", "1")
    assert page.evaluate("window.hiper.count()") == len(mode_trajectories())
    page.click("#traj-rows tr:first-child")
    assert page.locator("#detail .meta-line").inner_text().startswith("run b/run")
    page.select_option("#f-run", "")
    assert page.evaluate("window.hiper.count()") == 2 * len(mode_trajectories())
    # a metric named with HTML is picked and drawn as text
    page.select_option("#metric-pick", f"custom/{INJECTED_RESPONSE}")
    assert picked.get_attribute("data-title") == f"custom/{INJECTED_RESPONSE}"
    assert page.locator("img").count() == 0 and page.evaluate("window.__xss === undefined")
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "viewer-compare.png"), full_page=True)
    assert page.errors == [] and page.dialogs == []
