"""Per-stage time of a PPO iteration, with the old-log-prob forward and without it.

Since the trainer's old log-probs equal the sampler's (tests/test_sampling_consistency.py),
``prepare_batch`` takes them from the rollout instead of a second policy forward; the value
forward then runs only the critic (a separate critic's backbone) and the reference forward stays.
This benchmark runs the same iterations both ways, alternating (A B A B ...) so machine noise
hits both alike, from one model folder (an SFT model, or the tiny model built on the fly):

    python benchmarks/bench_iteration.py --model runs/quickstart/sft_model --iterations 3
    python benchmarks/bench_iteration.py --json      # tiny model, built in a temp folder

Prints the mean seconds per stage (rollout, prepare = the no-grad forwards + estimation,
update = the PPO step) for each variant, and the ratio; ``--json``: one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

STAGES = ("rollout", "prepare", "update", "iteration")


def run(model: str | None, config: str, iterations: int, repeats: int, extra: list[str]):
    from hiper.train.config import load_train_config
    from hiper.train.loop import Trainer

    times: dict[str, dict[str, list[float]]] = {"recompute": {}, "sampler": {}}
    root = Path(tempfile.mkdtemp(prefix="bench_iteration-"))
    try:
        for rep in range(repeats):
            for variant in ("recompute", "sampler"):
                overrides = [
                    f"run_dir={root / f'{variant}{rep}'}",
                    "sft.episodes=0",
                    "logging.tensorboard=false",
                    f"ppo.recompute_old_logprobs={variant == 'recompute'}",
                    *([f"model.path={model}"] if model else []),
                    *extra,
                ]
                trainer = Trainer(load_train_config(config, overrides))
                trainer._setup()
                try:
                    for it in range(1, iterations + 1):
                        m = trainer.train_iteration(it)
                        for s in STAGES:
                            times[variant].setdefault(s, []).append(m[f"time/{s}_s"])
                finally:
                    trainer.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {v: {s: statistics.mean(x) for s, x in t.items()} for v, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: build the config's tiny model)")
    p.add_argument(
        "--config", default=str(Path(__file__).parent.parent / "configs/quickstart.yaml")
    )
    p.add_argument("--iterations", type=int, default=2, help="iterations per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per variant, alternating")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    a = p.parse_args()
    res = run(a.model, a.config, a.iterations, a.repeats, a.overrides)
    print(f"{'stage':<10} {'recompute (s)':>14} {'sampler (s)':>12} {'ratio':>7}")
    for s in STAGES:
        r, f = res["recompute"][s], res["sampler"][s]
        print(f"{s:<10} {r:>14.2f} {f:>12.2f} {r / f:>7.2f}")
    if a.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
