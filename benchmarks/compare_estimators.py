"""HAE vs the flat baselines from the same SFT start, at equal environment episodes.

Takes finished quickstart runs (one per seed, e.g. ``hiper train configs/quickstart.yaml
run_dir=runs/qs0 seed=0``) and, from each run's own ``sft_model``, trains every other estimator
with the quickstart's settings unchanged but the estimator (the same Plan–Execute prompt, task
pool, task schedule of 4 tasks x 4 episodes per iteration, sampling seeds, PPO settings and
evaluation). HAE's curve is the quickstart run itself. A critic-based estimator (GAE) gets the
same value pre-training as HAE; the critic-free ones (GRPO, GiGPO) skip it.

    python benchmarks/compare_estimators.py runs/qs0 runs/qs1 runs/qs2 --out runs/compare \
        --workers 2 --plot docs/img/estimators.png

Prints, per estimator, the evaluation success (training tasks, fresh sampling seeds) at every
evaluated iteration as mean ± std over seeds, and the gain over the SFT start; ``--json``: one
JSON object last. A run already finished under ``--out`` is reused, so the command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: estimator -> its config (the quickstart's HAE config is replaced by the baseline's own)
BASELINES = {
    "grpo": "{norm_by_std: true}",
    "gigpo": "{gamma: 0.95, omega: 1.0, norm: mean_std}",
    "gae": "{gamma: 0.95, lam: 0.95}",
}


def _curve(run: Path, last: int | None) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [
        (r["iteration"], r["eval/success"])
        for r in rows
        if "eval/success" in r and (last is None or r["iteration"] <= last)
    ]


def _train(quick: Path, estimator: str, out: Path, iterations: int | None) -> Path:
    run = out / f"{estimator}-{quick.name}"
    if (run / "summary.json").is_file():
        return run
    cfg = quick / "config.yaml"
    import yaml

    seed = yaml.safe_load(cfg.read_text())["seed"]
    cmd = [
        sys.executable,
        "-m",
        "hiper.cli",
        "train",
        str(cfg),
        f"run_dir={run}",
        f"seed={seed}",
        f"model.path={quick / 'sft_model'}",
        "sft.epochs=0",  # the SFT model is given; only the critic learns from demonstrations
        f"algo.estimator={estimator}",
        f"algo.config={BASELINES[estimator]}",
        "eval.extra_splits=[]",
        "logging.tensorboard=false",
        *([f"iterations={iterations}"] if iterations else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = out / f"{estimator}-{quick.name}.log"
    with open(log, "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{estimator} from {quick} failed (exit {res.returncode}); see {log}")
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("quickstart_runs", nargs="+", type=Path, help="finished quickstart run dirs")
    p.add_argument("--out", type=Path, required=True, help="folder for the baseline runs")
    p.add_argument("--estimators", default=",".join(BASELINES), help="comma-separated subset")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument(
        "--iterations",
        type=int,
        help="train the baselines this many iterations and compare every curve up to it "
        "(default: the quickstart's)",
    )
    p.add_argument("--plot", type=Path, help="write the curves as a PNG")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    names = [e for e in a.estimators.split(",") if e]
    bad = [e for e in names if e not in BASELINES]
    if bad:
        raise SystemExit(f"unknown estimator(s) {bad}; expected some of {list(BASELINES)}")
    for q in a.quickstart_runs:
        if not (q / "sft_model").is_dir() or not (q / "metrics.jsonl").is_file():
            raise SystemExit(f"{q} is not a quickstart run past its SFT (no sft_model)")
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = [(q, e) for e in names for q in a.quickstart_runs]
    with ThreadPoolExecutor(max(1, a.workers)) as pool:
        runs = list(pool.map(lambda j: _train(j[0], j[1], a.out, a.iterations), jobs))
    for q in a.quickstart_runs:
        if not (q / "summary.json").is_file():
            raise SystemExit(f"{q} has not finished; rerun this command when it has")
    curves: dict[str, list[list[tuple[int, float]]]] = {"hae": []}
    for q in a.quickstart_runs:
        curves["hae"].append(_curve(q, a.iterations))
    for (_, e), run in zip(jobs, runs, strict=True):
        curves.setdefault(e, []).append(_curve(run, a.iterations))
    result = {}
    print(f"{'estimator':<10} {'iteration: success % (mean ± std over seeds)':<60} gain (pp)")
    for e, cs in curves.items():
        its = [i for i, _ in cs[0]]
        vals = np.array([[v for _, v in c] for c in cs]) * 100
        gain = vals[:, -1] - vals[:, 0]
        cells = "  ".join(
            f"{i}: {m:.1f}±{s:.1f}" for i, m, s in zip(its, vals.mean(0), vals.std(0), strict=True)
        )
        print(f"{e:<10} {cells:<60} {gain.mean():+.1f} ± {gain.std():.1f}")
        result[e] = {
            "iterations": its,
            "success_mean": vals.mean(0).tolist(),
            "success_std": vals.std(0).tolist(),
            "gain_pp": gain.tolist(),
        }
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for e, r in result.items():
            m, s = np.array(r["success_mean"]), np.array(r["success_std"])
            ax.plot(r["iterations"], m, marker="o", label=e)
            ax.fill_between(r["iterations"], m - s, m + s, alpha=0.15)
        ax.set_xlabel("PPO iteration (16 episodes each, same tasks for every estimator)")
        ax.set_ylabel("success on the training tasks (%)")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        a.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=120)
    if a.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
