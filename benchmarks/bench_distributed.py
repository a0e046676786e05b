"""Iteration time by stage, one process vs several (``hiper train --nproc N``, torchrun).

Each configuration trains the same run (``rollout.shards`` fixed, so every one plays the same
episodes) and the per-iteration stage times come from its ``metrics.jsonl``: rollout (every rank
plays its shards, then the episodes are gathered), estimation (``prepare_batch``: the no-grad
forward split between the ranks, then HAE), update (PPO: micro-batches split, gradients summed)
and the whole iteration; the checkpoint (rank 0 alone writes it) is timed by saving the run's
last one again. Medians over the iterations after the first.

CPU (the default; the tiny model, built in a temporary folder; processes x threads each: 1x1,
then 1x2 and 2x1, the two ways to use 2 cores, and 2x1-fsdp, the RL iterations sharded with
FSDP2 (``model.fsdp``); run one after the other):

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --json

GPU (a lent device; one process per GPU): generation and training tokens/s, MFU against
``--peak-tflops`` (989 for an H100/H200 in bf16, dense) and peak memory, e.g.

    python benchmarks/bench_distributed.py --device cuda --dtype bfloat16 --configs 1x1 2x1 \
        --model /models/Qwen2.5-1.5B-Instruct --peak-tflops 989

MFU counts 2 FLOPs per parameter per generated token and 6 per trained token (forward and
backward; attention's share left out), so it is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: a quickstart run cut to what an iteration costs: a short SFT, no screening, no evaluation
#: between the start and the end, 4 tasks x 4 episodes per iteration (a pool of 8) in 2 shards
RUN = [
    "sft.episodes=60",
    "sft.critic_steps=10",
    "sft.critic_episodes=8",
    "rollout.task_pool=8",
    "rollout.pool_screen=0",
    "rollout.shards=2",
    "eval.every=0",
    "eval.extra_splits=[]",
    "eval.tasks=1",
    "eval.seeds=1",
    "logging.tensorboard=false",
    "checkpoint_every=1",
]
STAGES = {
    "rollout_s": "time/rollout_s",
    "estimation_s": "time/prepare_s",
    "update_s": "time/update_s",
    "iteration_s": "time/iteration_s",
}


def train(run_dir: Path, nproc: int, threads: int, extra: list[str]) -> float:
    """``hiper train quickstart`` in ``nproc`` processes of ``threads`` threads; its wall time."""
    cmd = [sys.executable, "-m", "hiper.cli", "train", "quickstart", f"run_dir={run_dir}"]
    cmd += [*RUN, *extra, "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def checkpoint_seconds(run_dir: Path, repeats: int = 3) -> float:
    """Median seconds to write the run's latest checkpoint again (model, optimizer, RNG)."""
    from hiper.models.policy import load_policy
    from hiper.runs.checkpoints import load_checkpoint, restore_state, save_checkpoint
    from hiper.train.config import load_train_config
    from hiper.train.ppo import make_optimizer

    cfg = load_train_config(str(run_dir / "config.yaml"), [])
    ckpt = load_checkpoint(run_dir)
    policy = load_policy(ckpt.policy_dir, device=cfg.model.device, dtype=cfg.model.dtype)
    opt = make_optimizer(policy, cfg.ppo)
    restore_state(ckpt, opt)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            t0 = time.perf_counter()
            save_checkpoint(tmp, i + 1, policy=policy, optimizer=opt, extra={})
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stage_times(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    its = [r for r in rows if r["iteration"] >= 2] or [r for r in rows if r["iteration"] >= 1]
    out = {name: statistics.median(r[key] for r in its) for name, key in STAGES.items()}
    for key in ("throughput/gen_tokens_per_s", "throughput/update_tokens_per_s", "memory/peak_gb"):
        out[key.split("/")[1]] = statistics.median(r[key] for r in its)
    out["success_end"] = rows[-1]["train/success"]
    return out


def parameters(run_dir: Path) -> int:
    """The policy's parameter count (the actor: what generates and what the update trains)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hiper.runs.checkpoints import load_checkpoint

    config = AutoConfig.from_pretrained(load_checkpoint(run_dir).policy_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["1x1", "1x2", "2x1", "2x1-fsdp"],
        help="PROCESSESxTHREADS each, -fsdp to shard the model (model.fsdp), -bf16 for FSDP2's "
        "bfloat16 compute as well (model.mixed_precision); on a GPU one GPU per process, the "
        "threads ignored",
    )
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--model", default=None, help="a model folder (default: the tiny model)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="per device, for MFU")
    ap.add_argument("--keep", default=None, help="keep the run folders under this folder")
    ap.add_argument("--json", action="store_true", help="also print one JSON object last")
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    extra = [f"iterations={args.iterations}", f"model.device={args.device}"]
    extra += [f"model.dtype={args.dtype}"]
    if args.model:
        extra.append(f"model.path={args.model}")
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench_distributed-"))
    results: dict[str, dict] = {}
    try:
        for name in args.configs:
            shape, *options = name.split("-")
            try:
                n, threads = (int(x) for x in shape.split("x"))
            except ValueError:
                n = 0
            if n < 1 or threads < 1 or not set(options) <= {"fsdp", "bf16"}:
                sys.exit(
                    f"error: --configs {name!r}: expected PROCESSESxTHREADS[-fsdp[-bf16]], "
                    "e.g. 2x1 or 2x1-fsdp"
                )
            sharding = ["model.fsdp=true"] * ("fsdp" in options or "bf16" in options)
            sharding += ["model.mixed_precision=true"] * ("bf16" in options)
            run_dir = root / name
            shutil.rmtree(run_dir, ignore_errors=True)
            wall = train(run_dir, n, threads, [*extra, *sharding])
            r = {"processes": n, "threads_per_process": threads, "wall_s": wall}
            r["fsdp"], r["mixed_precision"] = bool(sharding), "bf16" in options
            r.update(stage_times(run_dir))
            r["checkpoint_s"] = checkpoint_seconds(run_dir)
            if args.peak_tflops:
                p = parameters(run_dir)
                peak = args.peak_tflops * 1e12 * n
                r["parameters"] = p
                r["mfu_generation"] = 2 * p * r["gen_tokens_per_s"] / peak
                r["mfu_update"] = 6 * p * r["update_tokens_per_s"] / peak
            results[name] = r
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    base = results[args.configs[0]]
    print(f"device {args.device}, {args.iterations} iterations, medians of iterations 2+")
    head = f"{'config':>13} {'rollout':>8} {'estim.':>8} {'update':>8} {'iter.':>8} {'ckpt':>7}"
    print(head + f" {'gen tok/s':>10} {'upd tok/s':>10} {'peak GB':>8} {'x iter.':>8}")
    for name, r in results.items():
        speedup = base["iteration_s"] / r["iteration_s"]
        print(
            f"{name:>13} {r['rollout_s']:8.2f} {r['estimation_s']:8.2f} {r['update_s']:8.2f} "
            f"{r['iteration_s']:8.2f} {r['checkpoint_s']:7.2f} {r['gen_tokens_per_s']:10.0f} "
            f"{r['update_tokens_per_s']:10.0f} {r['peak_gb']:8.2f} {speedup:8.2f}"
        )
        if "mfu_update" in r:
            print(
                f"{'':>13} MFU generation {r['mfu_generation']:.2%}, update {r['mfu_update']:.2%}"
            )
    if args.json:
        print(json.dumps({"device": args.device, "iterations": args.iterations, **results}))


if __name__ == "__main__":
    main()
