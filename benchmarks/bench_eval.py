"""Evaluation wall time: every (seed, task) episode in one rollout vs one rollout per seed.

``evaluate_policy`` plays all ``seeds x tasks`` episodes together, in waves of up to the pool's
size that share each generate call; before, it played the seeds one after another, so a 4-task
pool was generated 4 prompts at a time. "per seed" below is exactly that (``seeds`` calls with
``seeds=1``). Both run on one pool of ``--workers`` environments, alternating (A B A B ...) so
machine noise hits both alike:

    python benchmarks/bench_eval.py --model runs/quickstart/sft_model --tasks 4 --seeds 16
    python benchmarks/bench_eval.py --json      # tiny model, built in a temp folder

Prints the mean seconds of each way, the ratio and the success rates (statistically equal, not
identical: the episodes draw different random numbers); ``--json``: one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

OPTIONS = {"max_steps": 20, "task_types": ["pick_and_place_simple"]}


def run(model: str, tasks: int, seeds: int, workers: int, repeats: int, threads: int) -> dict:
    import torch

    from hiper.envs import make_env
    from hiper.envs.pool import EnvPool
    from hiper.eval import evaluate_policy
    from hiper.models.policy import load_policy

    torch.set_num_threads(threads)
    policy = load_policy(model, reference=False)
    probe = make_env("household", **OPTIONS)
    ids = [probe.task_id_for_seed(s) for s in range(tasks)]
    probe.close()
    pool = EnvPool("household", workers, options=OPTIONS)
    kw = dict(
        options=OPTIONS,
        greedy=False,
        temperature=0.4,
        max_turns=20,
        max_new_tokens=48,
        history_len=1,
        instructions=False,
        pool=pool,
    )
    out: dict[str, dict[str, list[float]]] = {"batched": {}, "per_seed": {}}
    try:
        for _ in range(repeats):
            for way in ("batched", "per_seed"):
                t0 = time.perf_counter()
                if way == "batched":
                    runs = evaluate_policy(policy, "household", ids, seeds=seeds, **kw).runs
                else:
                    runs = [
                        evaluate_policy(policy, "household", ids, seeds=1, **kw).runs[0]
                        for _ in range(seeds)
                    ]
                out[way].setdefault("seconds", []).append(time.perf_counter() - t0)
                success = statistics.mean(t.success for r in runs for t in r)
                out[way].setdefault("success", []).append(success)
    finally:
        pool.close()
    res = {w: {k: statistics.mean(v) for k, v in d.items()} for w, d in out.items()}
    res["speedup"] = res["per_seed"]["seconds"] / res["batched"]["seconds"]
    res["episodes"] = tasks * seeds
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a model folder (default: a tiny model built on the fly)")
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    tmp = None
    model = a.model
    if model is None:
        from hiper.demos import household_corpus
        from hiper.models.tiny import build_tiny_model

        tmp = Path(tempfile.mkdtemp(prefix="bench_eval-"))
        model = str(build_tiny_model(tmp, household_corpus(n_episodes=30, seed=0), seed=0))
    try:
        r = run(model, a.tasks, a.seeds, a.workers, a.repeats, a.threads)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{a.tasks} tasks x {a.seeds} seeds = {r['episodes']} episodes, {a.workers} workers")
    for way in ("batched", "per_seed"):
        d = r[way]
        print(f"  {way:9s} {d['seconds']:6.1f} s   success {100 * d['success']:.1f} %")
    print(f"  per seed / batched: {r['speedup']:.2f}x")
    if a.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
