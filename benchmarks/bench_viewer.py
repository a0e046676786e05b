"""How fast the `hiper view` report of a large run builds, opens and filters in headless Chromium.

    python benchmarks/bench_viewer.py [--trajectories 10000] [--json]

Writes a run folder with N logged trajectories (N distinct episodes) of real household text: noisy expert episodes
(successes) and random-agent episodes (failures) on tasks of all six types, in 100 iterations,
with made-up advantages on every turn, plus made-up metrics. Then measures:

1. building the report (reading the logs, writing index.html) and its size;
2. opening it in Debian Chromium (Playwright): navigation start to the viewer's ready flag;
3. filtering: each filter change (split, outcome, task type, iteration, failure mode, text search)
   timed in the page from the change event to the re-rendered list, and opening one trajectory;
4. the learning curves: picking a metric, and moving the smoothing slider (every chart redrawn).

The page opens on the latest training iteration, so the filters start from split = train and the
last iteration; the first filter change below starts from there.

Target (issue 6): a 10,000-trajectory report opens and filters in under 2 s.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from hiper.demos import expert_transcripts
from hiper.envs import make_env
from hiper.envs.base import ExpertTurn
from hiper.protocol import parse
from hiper.rollout import Task
from hiper.runs.log import MetricsLogger, TrajectoryLog
from hiper.types import Trajectory, Turn
from hiper.viz import build_report

CHROMIUM = "/usr/bin/chromium"


def _episodes(n_tasks: int, seed: int) -> list[Trajectory]:
    """Real household episodes: noisy expert ones (mostly won) and random-agent ones (mostly lost)."""
    env = make_env("household", max_steps=20)
    rng = random.Random(seed)
    expert_tasks = [Task(task_id=env.task_id_for_seed(k)) for k in range(n_tasks) if k % 3]
    demos = iter(
        expert_transcripts("household", expert_tasks, noise=0.2, rng=rng, options={"max_steps": 20})
    )
    out = []
    for k in range(n_tasks):
        tid = env.task_id_for_seed(k)
        if k % 3:
            demo = next(demos)
            turns = []
            for t in demo.turns:  # what a policy writing the executed action would have written
                text = ExpertTurn(parse(t.target).switch, t.subgoal, t.executed).text()
                turns.append(
                    Turn(
                        observation=t.observation,
                        response_text=text,
                        decision=parse(text),
                        reward=t.reward,
                        terminated=t.terminated,
                        truncated=t.truncated,
                        subgoal=t.subgoal,
                    )
                )
            info = {"task": demo.task, "final_observation": demo.final_observation}
            out.append(Trajectory(demo.task_id, turns, demo.task_type, success=demo.won, info=info))
            continue
        res = env.reset(task_id=tid)
        first, turns = res.info, []
        while not res.done:
            action = rng.choice(res.admissible)
            text = ExpertTurn("KEEP" if turns else "SWITCH", "explore the room", action).text()
            if rng.random() < 0.1:
                text = text[: rng.randrange(len(text))]  # a malformed, cut-off response
            obs = res.observation
            res = env.step(action)
            turns.append(Turn(obs, text, parse(text), res.reward, res.terminated, res.truncated))
        info = {"task": first["task"], "final_observation": res.observation}
        out.append(
            Trajectory(
                first["task_id"], turns, first["task_type"], success=res.info["won"], info=info
            )
        )
    return out


def write_run(folder: Path, n: int, seed: int = 0) -> None:
    """A run folder with ``n`` trajectories over 100 iterations and per-iteration metrics."""
    base = _episodes(n, seed)  # n distinct episodes: no repeats to flatter the string table
    rng = random.Random(seed)
    per_it = max(1, n // 100)
    with TrajectoryLog(folder, with_tokens=False) as log:
        for it in range(0, (n + per_it - 1) // per_it):
            batch = [base[(it * per_it + j) % len(base)] for j in range(per_it)]
            batch = batch[: n - it * per_it]
            extras = [
                [
                    {
                        "adv_action": rng.gauss(0, 1),
                        "adv_subgoal": rng.gauss(0, 1) if t.decision.switch == "SWITCH" else None,
                        "adv_switch": rng.gauss(0, 1) if k else None,
                        "shaped_reward": t.reward,
                    }
                    for k, t in enumerate(tr.turns)
                ]
                for tr in batch
            ]
            log.append(it, "train" if it % 10 else "eval", batch, extras=extras)
    with MetricsLogger(folder, tensorboard=False) as m:
        for it in range(100):
            m.log(
                it,
                {
                    "train/success": min(1.0, 0.2 + it / 150 + rng.gauss(0, 0.05)),
                    "train/switch_rate": 0.2 + rng.gauss(0, 0.02),
                    "train/segment_length": 4 + rng.gauss(0, 0.3),
                    "train/invalid_rate": max(0.0, 0.1 - it / 1000),
                    "adv/low/std": 1.0,
                    "adv/high/std": 0.8,
                    "ppo/explained_var/low": min(0.9, it / 100),
                    "ppo/kl": it / 1000,
                },
            )


FILTERS = [
    ("split = train", "#f-split", "train"),
    ("outcome = failure", "#f-outcome", "failure"),
    ("task type = pick_and_place_simple", "#f-type", "pick_and_place_simple"),
    ("iteration = 42", "#f-iteration", "42"),
    ("all iterations", "#f-iteration", ""),
    ("failure mode = loop", "#f-mode", "loop"),
    ("any failure mode", "#f-mode", ""),
]


def measure(report: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        t0 = time.perf_counter()
        page.goto(report.as_uri())
        page.wait_for_function("window.hiperReady !== undefined", timeout=60_000)
        out["open_wall_s"] = time.perf_counter() - t0
        out["open_ready_s"] = page.evaluate("window.hiperReady") / 1000  # from navigation start
        for name, sel, value in FILTERS:
            ms = page.evaluate(
                """([sel, value]) => { const e = document.querySelector(sel);
                   const t = performance.now(); e.value = value;
                   e.dispatchEvent(new Event('change')); return performance.now() - t; }""",
                [sel, value],
            )
            out[f"filter[{name}]_s"] = ms / 1000
        ms = page.evaluate(
            """() => { const e = document.querySelector('#f-query'); const t = performance.now();
               e.value = 'cool'; e.dispatchEvent(new Event('input'));
               return performance.now() - t; }"""
        )
        out["filter[search 'cool']_s"] = ms / 1000
        out["visible_after_filters"] = float(page.evaluate("window.hiper.count()"))
        page.fill("#f-query", "")
        ms = page.evaluate(
            """() => { const t = performance.now(); window.hiper.select(window.hiper.state.rows[0]);
               return performance.now() - t; }"""
        )
        out["open_trajectory_s"] = ms / 1000
        ms = page.evaluate(
            """() => { const e = document.querySelector('#metric-pick'); const t = performance.now();
               e.value = 'train/switch_rate'; e.dispatchEvent(new Event('change'));
               return performance.now() - t; }"""
        )
        out["pick_metric_s"] = ms / 1000
        ms = page.evaluate(
            """() => { const e = document.querySelector('#smooth'); const t = performance.now();
               e.value = '0.8'; e.dispatchEvent(new Event('input'));
               return performance.now() - t; }"""
        )
        out["smoothing_s"] = ms / 1000
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trajectories", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hiper-bench-viewer-"))
    try:
        t0 = time.perf_counter()
        write_run(tmp / "run", args.trajectories)
        make_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = build_report(tmp / "run")
        build_s = time.perf_counter() - t0
        size_mb = report.stat().st_size / 1e6
        res = {"trajectories": args.trajectories, "build_s": build_s, "html_mb": size_mb}
        res.update(measure(report))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"run with {args.trajectories} trajectories written in {make_s:.1f} s")
    print(f"report built in {build_s:.2f} s: {size_mb:.1f} MB")
    print(
        f"opened in Chromium: {res['open_wall_s']:.2f} s wall ({res['open_ready_s']:.2f} s "
        "from navigation start to the viewer's ready flag)"
    )
    for k, v in res.items():
        if k.startswith("filter[") or k in ("open_trajectory_s", "pick_metric_s", "smoothing_s"):
            print(f"  {k[:-2]:42s} {1000 * v:8.1f} ms")
    worst = max(v for k, v in res.items() if k.startswith("filter["))
    res["worst_filter_s"] = worst
    ok = res["open_wall_s"] < 2.0 and worst < 2.0
    print(f"target (open and filter < 2 s): {'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
