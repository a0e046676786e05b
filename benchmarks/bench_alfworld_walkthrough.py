"""Benchmark: replay every game's walkthrough of an ALFWorld split through hiper's adapter.

Each game of the split is reset by task id and its walkthrough is stepped through
``make_env("alfworld", ...)`` (real textworld PDDL games, alfworld object names); a game counts as
won when the last step reports ``won`` with reward 1 and ``terminated``. Figures: wins / total,
steps, wall time, steps/s, and the mean time of a reset (load + reset of a new game) and of a step.

    python benchmarks/bench_alfworld_walkthrough.py [--split eval_out_of_distribution]
        [--data-dir DIR | --tarball json_2.1.1.tar.gz] [--workers 1] [--limit N] [--json]

Data: ``--data-dir`` (folder holding ``json_2.1.1`` or ``json_2.1.1`` itself), else
``$ALFWORLD_DATA``, else the release tarball (``--tarball``, default
``<project root>/../shared/data/alfworld/json_2.1.1.tar.gz``) extracted once into the hiper cache.
With ``--json`` the last line of stdout is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hiper.envs import make_env
from hiper.envs.alfworld import SPLIT_FOLDERS, ensure_alfworld_data

DEFAULT_TARBALL = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "alfworld"
    / "json_2.1.1.tar.gz"
)


def replay(data_dir: str, split: str, task_ids: list[str]) -> list[dict[str, Any]]:
    """Replay the walkthroughs of ``task_ids`` in one env; one record per game."""
    env = make_env("alfworld", data_dir=data_dir, split=split)
    records = []
    try:
        for task_id in task_ids:
            t0 = time.perf_counter()
            result = env.reset(task_id=task_id)
            t1 = time.perf_counter()
            steps, not_admissible = 0, 0
            for action in env.walkthrough():
                if result.done:
                    break
                not_admissible += action not in result.admissible
                result = env.step(action)
                steps += 1
            t2 = time.perf_counter()
            records.append(
                {
                    "task_id": task_id,
                    "task_type": result.info["task_type"],
                    "won": bool(result.info["won"] and result.terminated and result.reward == 1.0),
                    "steps": steps,
                    "not_admissible": not_admissible,
                    "reset_s": t1 - t0,
                    "steps_s": t2 - t1,
                }
            )
    finally:
        env.close()
    return records


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--split", default="eval_out_of_distribution", choices=sorted(SPLIT_FOLDERS)
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tarball", default=str(DEFAULT_TARBALL))
    parser.add_argument("--workers", type=int, default=1, help="processes (one env each)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N games (0: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    data_dir = args.data_dir or os.environ.get("ALFWORLD_DATA")
    if not data_dir:
        data_dir = str(ensure_alfworld_data(args.tarball, splits=(args.split,)))
    probe = make_env("alfworld", data_dir=data_dir, split=args.split)
    task_ids = list(probe.task_ids)
    probe.close()
    if args.limit > 0:
        task_ids = task_ids[: args.limit]
    workers = max(1, min(args.workers, len(task_ids)))

    t0 = time.perf_counter()
    if workers == 1:
        records = replay(data_dir, args.split, task_ids)
    else:
        chunks = [task_ids[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            parts = pool.map(replay, [data_dir] * workers, [args.split] * workers, chunks)
            records = [r for part in parts for r in part]
    wall = time.perf_counter() - t0

    wins = sum(r["won"] for r in records)
    steps = sum(r["steps"] for r in records)
    reset_s = sum(r["reset_s"] for r in records)
    steps_s = sum(r["steps_s"] for r in records)
    per_type: dict[str, list[int]] = {}
    for r in records:
        counts = per_type.setdefault(r["task_type"], [0, 0])
        counts[0] += r["won"]
        counts[1] += 1
    figures = {
        "split": args.split,
        "data_dir": data_dir,
        "workers": workers,
        "games": len(records),
        "wins": wins,
        "success_rate": wins / len(records) if records else 0.0,
        "steps": steps,
        "walkthrough_actions_not_admissible": sum(r["not_admissible"] for r in records),
        "wall_s": round(wall, 3),
        "steps_per_s": round(steps / wall, 3) if wall else 0.0,
        "games_per_s": round(len(records) / wall, 4) if wall else 0.0,
        "mean_reset_s": round(reset_s / len(records), 4) if records else 0.0,
        "mean_step_s": round(steps_s / steps, 4) if steps else 0.0,
        "per_type": {t: {"wins": w, "games": n} for t, (w, n) in sorted(per_type.items())},
        "lost_games": [r["task_id"] for r in records if not r["won"]],
    }

    print(f"ALFWorld walkthrough replay: split={args.split} ({SPLIT_FOLDERS[args.split]})")
    print(f"  wins          {wins}/{len(records)}")
    for t, c in figures["per_type"].items():
        print(f"    {t:<32} {c['wins']}/{c['games']}")
    print(
        f"  steps         {steps}  (walkthrough actions not admissible: "
        f"{figures['walkthrough_actions_not_admissible']})"
    )
    print(f"  time          {wall:.1f} s with {workers} worker(s)")
    print(f"  steps/s       {figures['steps_per_s']:.2f}   games/s {figures['games_per_s']:.3f}")
    print(
        f"  mean reset    {figures['mean_reset_s'] * 1000:.0f} ms   "
        f"mean step {figures['mean_step_s'] * 1000:.0f} ms"
    )
    if figures["lost_games"]:
        print("  not won: " + ", ".join(figures["lost_games"]))
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    figures = main()
    sys.exit(0 if figures["wins"] == figures["games"] else 1)
