"""SmolLM2-135M-Instruct on a CPU: zero-shot, then after LoRA SFT on expert demonstrations, on
each environment's evaluation manifest (issue 15, point 3).

Per environment, three stages, each in a process of its own (so its peak memory is its own) and
each written atomically to ``OUT/<env>/<stage>.json`` (a re-run skips finished stages):

* ``zero_shot``: the prepared model (no adapters) plays the first ``--tasks`` tasks of the
  preset's evaluation split once at the preset's temperature;
* ``sft``: LoRA SFT with the preset's settings on ``--sft-episodes`` expert episodes (household
  expert, ALFWorld walkthroughs, WebShop oracle); the policy is saved under ``OUT/<env>/sft``;
* ``sft_eval``: that policy on the same tasks, the same way.

Everything else comes from ``configs/smollm2/<env>.yaml`` (prompts with the full instructions,
Plan–Execute, history, turn cap, new-token cap, LoRA rank). Reported: success, score,
format validity (the fraction of turns whose answer parses as a valid Plan–Execute turn),
episode length, generated tokens per second of evaluation wall time, SFT tokens (prompt +
target) per second, and peak resident memory.

    python benchmarks/smollm2_cpu.py --out runs/smollm2-cpu            # all three environments
    python benchmarks/smollm2_cpu.py --out runs/smollm2-cpu --envs household --tasks 5 --json

ALFWorld and WebShop read their data from ``--data`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS = ("household", "alfworld", "webshop")
STAGES = ("zero_shot", "sft", "sft_eval")
#: expert episodes of SFT per environment: ~7.5 min wall each on 2 threads (measured 2026-12-04)
SFT_EPISODES = {"household": 32, "alfworld": 32, "webshop": 20}
MODEL = "smollm2-135m-instruct"


def preset(env: str, data: Path, overrides: tuple[str, ...] = ()):
    from hiper.train.config import load_train_config

    extra = {
        "household": [],
        "alfworld": [f"env.options.data_dir={data / 'alfworld' / 'json_2.1.1.tar.gz'}"],
        "webshop": [
            f"env.options.data_dir={data / 'webshop'}",
            f"env.options.nltk_data={data / 'nltk'}",
        ],
    }[env]
    return load_train_config(
        str(ROOT / "configs" / "smollm2" / f"{env}.yaml"), [*extra, *overrides]
    )


def evaluate(env: str, model: str, tasks: int, workers: int, data: Path) -> dict:
    from hiper.eval import evaluate_policy, manifest_task_ids
    from hiper.models.policy import load_policy
    from hiper.train.loop import env_options

    cfg = preset(env, data)
    r, split = cfg.rollout, cfg.env.eval_split
    options = env_options(cfg, split)
    ids = manifest_task_ids(env, cfg.env.eval_manifest or split, tasks, options)
    t0 = time.perf_counter()
    policy = load_policy(model, reference=False)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = evaluate_policy(
        policy,
        env,
        ids,
        options=options,
        split=split,
        seeds=1,
        greedy=False,
        temperature=cfg.eval.temperature,
        max_turns=r.max_turns,
        max_new_tokens=r.max_new_tokens,
        history_len=r.history_len,
        format=r.format,
        instructions=r.instructions,
        workers=workers,
    )
    wall = time.perf_counter() - t0
    trajs = report.runs[0]
    turns = [t for tr in trajs for t in tr.turns]
    generated = sum(len(t.response_ids) for t in turns)
    return {
        "split": split,
        "tasks": len(ids),
        "success": sum(tr.success for tr in trajs) / len(trajs),
        "score": sum(tr.score for tr in trajs) / len(trajs),
        "format_validity": sum(t.decision.valid for t in turns) / len(turns),
        "episode_length": len(turns) / len(trajs),
        "max_turns": r.max_turns,
        "generated_tokens": generated,
        "prompt_tokens_mean": sum(len(t.prompt_ids) for t in turns) / len(turns),
        "wall_s": wall,
        "load_s": load_s,
        "generated_tokens_per_s": generated / wall,
        "example_answer": turns[0].response_text[:300] if turns else "",
    }


def sft(env: str, episodes: int, out: Path, data: Path) -> dict:
    from hiper.models.policy import load_policy
    from hiper.train.loop import env_options
    from hiper.train.sft import expert_examples, train_sft

    cfg = preset(env, data)
    r, s = cfg.rollout, cfg.sft
    policy = load_policy(MODEL, lora=cfg.model.lora, reference=False)
    t0 = time.perf_counter()
    examples = expert_examples(
        env,
        episodes,
        s.noise,
        s.seed,
        policy.tokenizer,
        history_len=r.history_len,
        options=env_options(cfg, cfg.env.train_split),
        instructions=r.instructions,
        format=r.format,
    )
    demo_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = train_sft(policy, examples, s)
    wall = time.perf_counter() - t0
    tokens = sum(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    policy.save(out / env / "sft")
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "episodes": episodes,
        "examples": len(examples),
        "steps": len(losses),
        "loss_first": losses[0],
        "loss_last": sum(tail) / len(tail),
        "tokens": tokens,
        "wall_s": wall,
        "demonstrations_s": demo_s,
        "train_tokens_per_s": tokens * s.epochs / wall,
    }


def run_stage(env: str, stage: str, args) -> dict:
    import torch

    torch.manual_seed(0)
    if stage == "zero_shot":
        res = evaluate(env, MODEL, args.tasks, args.workers, args.data)
    elif stage == "sft":
        res = sft(env, args.sft_episodes[env], args.out, args.data)
    else:
        res = evaluate(env, str(args.out / env / "sft"), args.tasks, args.workers, args.data)
    res["threads"] = torch.get_num_threads()
    from hiper.train.loop import peak_memory_gb

    res["peak_memory_gb"] = peak_memory_gb(torch.device("cpu"))  # the process's peak RSS
    return res


def table(results: dict) -> str:
    rows = [
        "| environment | stage | tasks | success | format validity | episode length | "
        "gen tok/s | SFT tok/s | wall s | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for env, stages in results.items():
        for stage, r in stages.items():
            ev = "success" in r
            rows.append(
                f"| {env} | {stage} | {r.get('tasks', '')} | "
                + (f"{100 * r['success']:.0f} %" if ev else "")
                + " | "
                + (f"{100 * r['format_validity']:.1f} %" if ev else "")
                + " | "
                + (f"{r['episode_length']:.1f}" if ev else "")
                + " | "
                + (f"{r['generated_tokens_per_s']:.1f}" if ev else "")
                + " | "
                + ("" if ev else f"{r['train_tokens_per_s']:.0f}")
                + f" | {r['wall_s']:.0f} | {r['peak_memory_gb']:.1f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/smollm2-cpu"))
    p.add_argument("--envs", default=",".join(ENVS), help="comma-separated, of " + ", ".join(ENVS))
    p.add_argument("--tasks", type=int, default=20, help="the first N tasks of the eval split")
    p.add_argument("--workers", type=int, default=20, help="episodes generated together")
    p.add_argument(
        "--sft-episodes",
        default="",
        help="ENV=N,... expert episodes of SFT (default "
        + ",".join(f"{k}={v}" for k, v in SFT_EPISODES.items())
        + ")",
    )
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", nargs=2, metavar=("ENV", "STAGE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    envs = [e for e in args.envs.split(",") if e]
    bad = [e for e in envs if e not in ENVS]
    if bad:
        p.error(f"unknown environment(s) {bad}; expected some of {list(ENVS)}")
    if args.tasks < 1 or args.workers < 1:
        p.error("--tasks and --workers must be >= 1")
    episodes = dict(SFT_EPISODES)
    for item in filter(None, args.sft_episodes.split(",")):
        name, _, n = item.partition("=")
        if name not in ENVS or not n.isdigit() or int(n) < 1:
            p.error(f"--sft-episodes: expected ENV=N with ENV in {list(ENVS)}, got {item!r}")
        episodes[name] = int(n)
    args.sft_episodes = episodes
    args.out = args.out.resolve()
    args.data = args.data.resolve()

    if args.one:
        env, stage = args.one
        from hiper.runs.log import atomic_write_text

        path = args.out / env / f"{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(run_stage(env, stage, args), indent=1) + "\n")
        return 0

    results: dict[str, dict] = {}
    for env in envs:
        for stage in STAGES:
            path = args.out / env / f"{stage}.json"
            if not path.exists():
                print(f"[{time.strftime('%H:%M:%S')}] {env} {stage} ...", flush=True)
                cmd = [sys.executable, __file__, "--one", env, stage, "--out", str(args.out)]
                cmd += ["--tasks", str(args.tasks), "--workers", str(args.workers)]
                cmd += ["--data", str(args.data)]
                cmd += ["--sft-episodes", ",".join(f"{k}={v}" for k, v in episodes.items())]
                if subprocess.call(cmd) != 0:
                    print(f"{env} {stage} failed; the finished stages are kept", file=sys.stderr)
                    return 1
            results.setdefault(env, {})[stage] = json.loads(path.read_text())
    print(table(results))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
