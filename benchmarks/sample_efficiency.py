"""Does hierarchy pay? Sample efficiency of HiPER (HAE) against the flat baselines, measured.

    python benchmarks/sample_efficiency.py --quick [--out DIR] [--json]     # = --profile quick
    python benchmarks/sample_efficiency.py --profile full --out DIR [--workers N] [--device cuda]
    python benchmarks/sample_efficiency.py --out DIR --report                # tables from what is done

One shared SFT checkpoint (a tiny model trained on noisy household expert demonstrations of every
setting, in both prompt formats), then, per setting, method and seed, PPO training from that
checkpoint with the same budget of environment steps, evaluating held-out success (unseen room
layouts with the training vocabulary, manifest v2, T = 0.4; ``--eval-split`` picks another) at regular step intervals. Methods:

* ``hiper_segment_return``, ``hiper_gain``: HAE with the Plan–Execute prompt (the two switch
  advantage variants);
* ``ppo_flat``, ``ppo_plan_execute``: PPO with turn-level GAE, flat (ReAct) and Plan–Execute prompt;
* ``grpo``, ``gigpo``: group size 8, flat prompt (as in the paper's baselines).

Settings: household chains of depth k = 2, 4, 6 (``chain2`` ...) and the six ALFWorld-style task
types (``types``). Every method sees the same number of episodes per iteration (group methods as
tasks x 8 rollouts), and each run stops at the same environment-step budget.

Outputs in ``--out``: ``results.json`` (every curve point), ``curves_<setting>.png`` (held-out
success vs environment steps, mean +- std over seeds), ``table.md`` (final success, steps to 50 %
and 80 % held-out success, the ratio of steps-to-threshold of the best flat baseline over HiPER's,
and the gradient-noise measurement). Gradient noise: at the end of each seed-0 run, on one shared
batch per setting and prompt format (collected once by the SFT policy, tasks x 8 rollouts so that
every estimator applies), the method's advantages are computed with its own (trained) critic, the
policy gradient of its surrogate is taken on 4 disjoint quarters of the batch, and the noise is
``mean_i |g_i - g|^2 / |g|^2`` (g the mean of the quarters' gradients; lower is a cleaner estimate).
The batch is collected in each seed-0 run by the SFT policy before training, with fixed seeds, so
every method of a prompt format sees the same episodes; ``results.json`` records each batch's
fingerprint and the report says if two methods' batches differ.

A long run survives interruption. ``--out`` holds the profile (``profile.json``; a different
profile is refused), the SFT checkpoint (made once), one result file per finished run
(``runs/<setting>/<method>/seed<k>.json``, written atomically) and each worker's log. Running
the same command again skips what is done and restarts unfinished runs from their start.
``--workers N`` trains N runs at once, each in its own process with ``cpu_count / N`` threads;
``--settings`` / ``--methods`` / ``--seeds`` pick a subset (to share the study between machines);
``--report`` only rebuilds the table and plots from the runs done so far, marking missing seeds.
Held-out evaluation also records the mean fraction of subtasks done (``progress``), which moves
before success does on the chains.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiper.models.policy import load_policy
from hiper.rollout import Task
from hiper.runs.log import atomic_write_text
from hiper.train.batch import micro_batches, model_device, pad_token_id, select_rows
from hiper.train.config import SFTConfig, load_train_config
from hiper.train.loop import Trainer
from hiper.train.ppo import Normalizers, ppo_loss
from hiper.train.prepare import prepare_batch
from hiper.train.sft import expert_examples, train_sft

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@dataclass(frozen=True)
class Method:
    estimator: str
    config: dict[str, Any]
    format: str
    group_size: int
    flat: bool  # a flat baseline (the ratio compares HiPER with the best of these)


HAE = {"gamma": 0.95, "lam_low": 1.0, "lam_high": 0.95}
METHODS: dict[str, Method] = {
    "hiper_segment_return": Method(
        "hae", {**HAE, "switch_advantage": "segment_return"}, "plan_execute", 1, False
    ),
    "hiper_gain": Method("hae", {**HAE, "switch_advantage": "gain"}, "plan_execute", 1, False),
    "ppo_flat": Method("gae", {"gamma": 0.95, "lam": 0.95}, "react", 1, True),
    "ppo_plan_execute": Method("gae", {"gamma": 0.95, "lam": 0.95}, "plan_execute", 1, True),
    "grpo": Method("grpo", {}, "react", 8, True),
    "gigpo": Method("gigpo", {"gamma": 0.95}, "react", 8, True),
}


@dataclass(frozen=True)
class Setting:
    options: dict[str, Any]
    manifest: str
    max_turns: int


EVAL_SPLITS = ("eval_out_of_distribution", "eval_in_distribution", "eval_novel_objects")


def _settings(max_steps: int, eval_split: str = EVAL_SPLITS[0]) -> dict[str, Setting]:
    out = {
        f"chain{k}": Setting(
            {"chain_depth": k, "max_steps": max_steps}, f"chain{k}-{eval_split}", k * max_steps
        )
        for k in (2, 4, 6)
    }
    out["types"] = Setting({"max_steps": max_steps}, eval_split, max_steps)
    return out


@dataclass(frozen=True)
class Profile:
    seeds: tuple[int, ...]
    budget_steps: int  # environment steps per run
    eval_every_steps: int
    eval_tasks: int  # first N tasks of the held-out manifest, one sampling seed at T = 0.4
    episodes_per_iteration: int
    sft_episodes: int  # per (setting, prompt format)
    max_steps: int = 15  # per subtask (a chain of depth k gets k x this)
    settings: tuple[str, ...] = ("chain2", "chain4", "chain6", "types")
    methods: tuple[str, ...] = tuple(METHODS)
    model: dict[str, int] = field(
        default_factory=lambda: {"vocab_size": 1024, "hidden_size": 128, "num_layers": 2}
    )
    noise_tasks: int = 1  # tasks (x 8 rollouts) of the gradient-noise batch
    # held-out manifest: unseen room layouts (training vocabulary), seen rooms with new tasks, or
    # unseen rooms with new object and receptacle types (eval_novel_objects)
    eval_split: str = EVAL_SPLITS[0]

    def __post_init__(self) -> None:
        if self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, got {self.eval_split!r}")
        unknown = [x for x in self.methods if x not in METHODS]
        known = _settings(1)
        unknown += [x for x in self.settings if x not in known]
        if unknown:
            raise ValueError(
                f"unknown method(s)/setting(s) {unknown}; methods: {sorted(METHODS)}, "
                f"settings: {sorted(known)}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        tuples = {"seeds", "settings", "methods"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})


PROFILES = {
    # <= 30 min on the 2-core dev machine: every setting and method once, a tiny budget
    "quick": Profile(
        seeds=(0,),
        budget_steps=480,
        eval_every_steps=480,
        eval_tasks=4,
        episodes_per_iteration=8,
        sft_episodes=40,
        max_steps=10,
    ),
    # sized for a long run / a larger machine: 3 seeds, 30k steps, evaluation every 3k
    "full": Profile(
        seeds=(0, 1, 2),
        budget_steps=30_000,
        eval_every_steps=3_000,
        eval_tasks=30,
        episodes_per_iteration=16,
        sft_episodes=300,
        noise_tasks=2,
    ),
    # seconds: the test suite's end-to-end check of this script
    "smoke": Profile(
        seeds=(0,),
        budget_steps=8,
        eval_every_steps=8,
        eval_tasks=1,
        episodes_per_iteration=8,
        sft_episodes=1,
        max_steps=2,
        settings=("chain2",),
        methods=("hiper_segment_return", "grpo"),
        model={"vocab_size": 600, "hidden_size": 32, "num_layers": 1},
    ),
}


# -- the shared SFT checkpoint ------------------------------------------------------------------


def shared_sft(
    out: Path, p: Profile, settings: dict[str, Setting], device: str = "cpu"
) -> tuple[Path, float]:
    """A tiny model SFT-trained on noisy expert demos of every setting in both prompt formats
    (the quickstart's SFT recipe: noise 0.2, one epoch, batch 16, lr 5e-3, 30 warm-up steps).
    Made once per study folder: ``sft.json`` (written last) marks a finished checkpoint, which
    is reused. Returns the checkpoint folder and the seconds its training took."""
    from hiper.demos import household_corpus
    from hiper.models.tiny import build_tiny_model

    sft_dir, done = out / "sft_model", out / "sft.json"
    if done.is_file():
        return sft_dir, float(json.loads(done.read_text())["seconds"])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    m = p.model
    base = build_tiny_model(
        out / "base_model",
        household_corpus(n_episodes=100, seed=0),
        vocab_size=m["vocab_size"],
        hidden_size=m["hidden_size"],
        num_layers=m["num_layers"],
        num_heads=4 if m["hidden_size"] % 4 == 0 else 2,
        seed=0,
    )
    policy = load_policy(base, reference=False, device=device)
    tok = policy.tokenizer
    # the quickstart's SFT recipe; seed 0 only orders the examples (their episodes are seeded below)
    recipe = SFTConfig(
        noise=0.2, batch_rows=16, micro_batch_rows=16, lr=5e-3, warmup_steps=30, seed=0
    )
    examples = []
    for i, name in enumerate(p.settings):
        for fmt in ("plan_execute", "react"):
            examples += expert_examples(
                "household",
                p.sft_episodes,
                recipe.noise,
                10_000 * (i + 1),
                tok,
                history_len=1,
                options=settings[name].options,
                instructions=False,
                format=fmt,
            )
    losses = train_sft(policy, examples, recipe)
    shutil.rmtree(sft_dir, ignore_errors=True)  # a half-written one from an interrupted study
    policy.lm.save_pretrained(sft_dir)
    tok.save_pretrained(sft_dir)
    seconds = time.perf_counter() - t0
    write_json(done, {"seconds": seconds, "examples": len(examples), "final_loss": losses[-1]})
    return sft_dir, seconds


def write_json(path: Path, obj: Any) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    atomic_write_text(path, json.dumps(obj, indent=1))


# -- one training run ---------------------------------------------------------------------------


def run_config(
    run_dir: Path, sft_dir: Path, p: Profile, s: Setting, m: Method, seed: int, device: str = "cpu"
):
    overrides = [
        f"run_dir={run_dir}",
        f"model.path={sft_dir}",
        f"model.device={device}",
        "sft.episodes=0",
        f"seed={seed}",
        f"env.options={json.dumps(s.options)}",
        f"env.eval_split={p.eval_split}",
        f"env.eval_manifest={s.manifest}",
        "env.workers=8",
        f"rollout.format={m.format}",
        f"rollout.max_turns={s.max_turns}",
        f"rollout.tasks_per_iteration={max(1, p.episodes_per_iteration // m.group_size)}",
        f"rollout.group_size={m.group_size}",
        f"algo.estimator={m.estimator}",
        f"algo.config={json.dumps(m.config)}",
        f"eval.tasks={p.eval_tasks}",
        "eval.seeds=1",
        "logging.tensorboard=false",
    ]
    return load_train_config(str(QUICKSTART), overrides)


def _point(steps: int, metrics: dict[str, float]) -> list[float]:
    """A curve point: [environment steps, held-out success, held-out subtask progress]."""
    success = metrics["eval/success"]
    return [steps, success, metrics.get("eval/subtask_progress", success)]


# training-batch figures kept per iteration: for the "why" when a curve stays flat
TRACED = ("success", "subtask_progress", "switch_rate", "segment_length", "invalid_rate")


def train_run(
    tr: Trainer, p: Profile, partial: Path | None = None
) -> tuple[list[list[float]], list[dict[str, float]]]:
    """Train until the step budget. Returns the curve (:func:`_point` from step 0, the SFT start)
    and per iteration the steps, the training batch's :data:`TRACED` figures and the critic's
    explained variance per head. ``partial``: rewritten after every evaluation with the curve
    and trace so far (to watch a long run; the report reads finished runs only)."""
    curve = [_point(0, tr.evaluate(0))]
    trace = []
    steps, it, next_eval = 0, 0, p.eval_every_steps
    while steps < p.budget_steps:
        it += 1
        m = tr.train_iteration(it)
        steps += int(m["train/turns"])
        trace.append(
            {"steps": steps}
            | {f"train_{k}": m[f"train/{k}"] for k in TRACED if f"train/{k}" in m}
            | {k.split("/")[-1]: v for k, v in m.items() if k.startswith("ppo/explained_var/")}
        )
        if steps >= next_eval or steps >= p.budget_steps:
            curve.append(_point(steps, tr.evaluate(it)))
            while next_eval <= steps:
                next_eval += p.eval_every_steps
            if partial is not None:
                write_json(partial, {"curve": curve, "train": trace})
    return curve, trace


@dataclass(frozen=True, order=True)
class RunKey:
    setting: str
    method: str
    seed: int

    def __str__(self) -> str:
        return f"{self.setting}/{self.method}/{self.seed}"

    @classmethod
    def parse(cls, text: str) -> RunKey:
        parts = text.split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"a run is SETTING/METHOD/SEED (e.g. chain4/grpo/0), got {text!r}")
        return cls(parts[0], parts[1], int(parts[2]))

    def result_path(self, out: Path) -> Path:
        return out / "runs" / self.setting / self.method / f"seed{self.seed}.json"

    def log_path(self, out: Path) -> Path:
        return out / "logs" / f"{self.setting}-{self.method}-seed{self.seed}.log"


def all_runs(p: Profile) -> list[RunKey]:
    """Seed-major, so that an interrupted study has every method of the first seed first."""
    return [RunKey(st, m, seed) for seed in p.seeds for st in p.settings for m in p.methods]


def batch_fingerprint(trajs) -> str:
    text = json.dumps([[tr.task_id, [t.response_text for t in tr.turns]] for tr in trajs])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def one_run(out: Path, p: Profile, key: RunKey, device: str = "cpu") -> dict[str, Any]:
    """Train one (setting, method, seed) from the shared SFT checkpoint and write its result file
    (atomically, last). An unfinished earlier attempt's working folder is discarded first."""
    t0 = time.perf_counter()
    s, m = _settings(p.max_steps, p.eval_split)[key.setting], METHODS[key.method]
    run_dir = out / "work" / f"{key.setting}-{key.method}-seed{key.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(run_config(run_dir, out / "sft_model", p, s, m, key.seed, device))
    tr._setup()
    noise = None
    try:
        batch = collect_batch(tr, p.noise_tasks, 0) if key.seed == p.seeds[0] else None
        curve, trace = train_run(tr, p, run_dir / "partial.json")
        if batch is not None:
            noise = gradient_noise(tr, batch) | {"batch": batch_fingerprint(batch)}
    finally:
        tr.close()
    result = {
        "curve": curve,
        "train": trace,
        "noise": noise,
        "format": m.format,
        "seconds": time.perf_counter() - t0,
    }
    write_json(key.result_path(out), result)
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _describe(key: RunKey, r: dict[str, Any]) -> str:
    return (
        f"{key.setting:7s} {key.method:22s} seed {key.seed}: held-out "
        + " ".join(f"{100 * pt[1]:.0f}%@{pt[0]:.0f}" for pt in r["curve"])
        + f"  ({r['seconds']:.0f} s)"
    )


def _worker_command(out: Path, key: RunKey, device: str, threads: int) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--out",
        str(out),
        "--run",
        str(key),
        "--device",
        device,
        "--threads",
        str(threads),
    ]


def run_parallel(
    out: Path, keys: list[RunKey], workers: int, device: str, threads: int | None
) -> list[RunKey]:
    """Each run in its own process, ``workers`` at a time, logging to ``logs/``. Returns the
    runs that failed (their logs say why); the others' result files are written."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    queue, running, failed = list(keys), {}, []
    try:
        _drain(out, queue, running, failed, workers, device, threads)
    finally:  # interrupted (Ctrl-C): stop the workers; their runs restart next time
        for proc in running.values():
            proc.kill()
            proc.wait()
    return failed


def _drain(out, queue, running, failed, workers, device, threads) -> None:
    while queue or running:
        while queue and len(running) < workers:
            key = queue.pop(0)
            log = key.log_path(out)
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w") as fh:
                running[key] = subprocess.Popen(
                    _worker_command(out, key, device, threads), stdout=fh, stderr=subprocess.STDOUT
                )
        time.sleep(0.5)
        for key, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            if proc.returncode == 0 and key.result_path(out).is_file():
                r = json.loads(key.result_path(out).read_text())
                print(_describe(key, r), flush=True)
            else:
                failed.append(key)
                print(
                    f"{key}: FAILED (exit {proc.returncode}); see {key.log_path(out)}", flush=True
                )


# -- gradient noise on a shared batch -----------------------------------------------------------


def collect_batch(tr: Trainer, n_tasks: int, seed: int):
    """``n_tasks`` x 8 rollouts by the (untrained) policy of ``tr``: the shared batch."""
    tasks = [
        Task(seed=10_000_000 + seed * 1000 + j, group_id=f"noise:{j}")
        for j in range(n_tasks)
        for _ in range(8)
    ]
    return tr._play(
        tr.train_pool,
        tasks,
        seed=424242,
        greedy=False,
        temperature=1.0,
        max_turns=tr.cfg.rollout.max_turns,
    )


def gradient_noise(tr: Trainer, trajs, parts: int = 4) -> dict[str, float]:
    cfg = tr.cfg
    prep = prepare_batch(
        tr.policy,
        tr.aligner,
        trajs,
        cfg.algo.estimator,
        cfg.algo.estimator_config,
        cfg.algo.shaping,
        cfg.ppo.micro_batch_rows,
    )
    b = prep.batch
    order = torch.randperm(b.num_rows, generator=torch.Generator().manual_seed(0))
    params = [p for p in tr.policy.actor_parameters() if p.requires_grad]
    # the policy-gradient term alone of the training loss (the same ppo_loss the update runs)
    pg_only = dataclasses.replace(cfg.ppo, kl_coef=0.0, entropy_coef=0.0, vf_coef=0.0)
    device = model_device(tr.policy)
    grads = []
    tr.policy.train()
    for chunk in order.chunk(parts):
        sub = select_rows(b, chunk)
        for q in params:
            q.grad = None
        norm = Normalizers.of(sub, device)
        for micro in micro_batches(sub, cfg.ppo.micro_batch_rows, None, pad_token_id(tr.policy)):
            loss, _ = ppo_loss(tr.policy, micro.to(device), norm, pg_only, b)
            loss.backward()
        grads.append(
            torch.cat(
                [(q.grad if q.grad is not None else torch.zeros_like(q)).flatten() for q in params]
            )
        )
    g = torch.stack(grads)
    mean = g.mean(0)
    adv = b.advantages[b.loss_mask]
    signal = float((mean**2).sum())
    # all advantages zero (e.g. every group all-fail under GRPO): no gradient, no noise ratio
    noise = float(((g - mean) ** 2).sum(1).mean()) / signal if adv.abs().max() > 0 else None
    return {
        "grad_noise": noise,
        "grad_norm": float(mean.norm()),
        "adv_var": float(adv.var()) if adv.numel() > 1 else float("nan"),
        "turns": float(len(prep.turns)),
    }


# -- analysis -----------------------------------------------------------------------------------


def steps_to(curve: list[list[float]], threshold: float) -> float | None:
    """The first evaluated step count with held-out success >= ``threshold`` (None: never)."""
    return next((float(pt[0]) for pt in curve if pt[1] >= threshold - 1e-9), None)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per setting and method: final success and subtask progress (mean, std over the seeds
    done), mean steps to 50 % / 80 % (over the seeds that reached it; None if none did), and the
    flat-best / HiPER step ratios."""
    table: dict[str, Any] = {}
    for setting, methods in results["runs"].items():
        rows = {}
        for name, seeds in methods.items():
            curves = [r["curve"] for r in seeds.values()]
            finals = [c[-1][1] for c in curves]
            progress = [c[-1][2] if len(c[-1]) > 2 else c[-1][1] for c in curves]
            row = {
                "seeds": len(curves),
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "progress_mean": float(np.mean(progress)),
                "start_mean": float(np.mean([c[0][1] for c in curves])),
            }
            for thr in (0.5, 0.8):
                hits = [steps_to(c, thr) for c in curves]
                got = [h for h in hits if h is not None]
                row[f"steps_to_{int(thr * 100)}"] = float(np.mean(got)) if got else None
                row[f"reached_{int(thr * 100)}"] = f"{len(got)}/{len(curves)}"
            rows[name] = row
        for thr in ("50", "80"):
            flat = [
                r[f"steps_to_{thr}"]
                for n, r in rows.items()
                if METHODS[n].flat and r[f"steps_to_{thr}"] is not None
            ]
            best = min(flat) if flat else None
            for n, r in rows.items():
                if not METHODS[n].flat:
                    own = r[f"steps_to_{thr}"]
                    r[f"ratio_{thr}"] = best / own if best is not None and own else None
        table[setting] = rows
    return table


def _cell(x: Any, fmt: str = "{:.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(results: dict[str, Any], table: dict[str, Any]) -> str:
    lines = [
        "| setting | method | start | final success | final progress | steps to 50 % "
        "| steps to 80 % | flat-best / HiPER (80 %) | grad noise | Var A |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, rows in table.items():
        for name, r in rows.items():
            gn = results["noise"].get(setting, {}).get(name, {})
            lines.append(
                f"| {setting} | {name} | {100 * r['start_mean']:.1f} % "
                f"| {100 * r['final_mean']:.1f} ± {100 * r['final_std']:.1f} % "
                f"| {100 * r['progress_mean']:.1f} % "
                f"| {_cell(r['steps_to_50'])} ({r['reached_50']}) "
                f"| {_cell(r['steps_to_80'])} ({r['reached_80']}) "
                f"| {_cell(r.get('ratio_80'), '{:.2f}x') if not METHODS[name].flat else ''} "
                f"| {_cell(gn.get('grad_noise'), '{:.2f}')} | {_cell(gn.get('adv_var'), '{:.2f}')} |"
            )
    lines.append("")
    lines.append(
        "Start: held-out success of the SFT checkpoint; progress: mean fraction of subtasks done "
        "at the last evaluation; (n/m): seeds that reached the threshold / seeds done."
    )
    if results.get("missing"):
        lines.append("")
        lines.append(
            f"**Partial:** {len(results['missing'])} of {results['planned']} runs not done: "
            + ", ".join(results["missing"][:12])
            + (" ..." if len(results["missing"]) > 12 else "")
        )
    for setting, fmts in results.get("batch_mismatch", {}).items():
        lines.append("")
        lines.append(
            f"**Warning:** {setting}: methods of one prompt format saw different noise "
            f"batches ({fmts}); their noise figures are not comparable."
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for setting, methods in results["runs"].items():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        seeds_done = set()
        for name, seeds in methods.items():
            curves = [r["curve"] for r in seeds.values()]
            seeds_done.add(len(curves))
            n = min(len(c) for c in curves)
            x = np.mean([[pt[0] for pt in c[:n]] for c in curves], axis=0)
            y = np.array([[pt[1] for pt in c[:n]] for c in curves])
            mean, std = y.mean(0), y.std(0)
            style = "-" if not METHODS[name].flat else "--"
            ax.plot(x, 100 * mean, style, marker="o", ms=3, label=f"{name} ({len(curves)})")
            ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), alpha=0.15)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("held-out success (%)")
        n_seeds = "/".join(str(k) for k in sorted(seeds_done))
        ax.set_title(
            f"household {setting} ({results['profile']['eval_split']}): "
            f"mean ± std over {n_seeds} seed(s)",
            fontsize=9,
        )
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"curves_{setting}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# -- main ---------------------------------------------------------------------------------------


def open_study(out: Path, p: Profile | None) -> Profile:
    """The study folder's profile: written on first use; a different one later is refused."""
    path = out / "profile.json"
    if path.is_file():
        saved = Profile.from_dict(json.loads(path.read_text()))
        if p is not None and saved != p:
            asked = asdict(p)
            diff = {k: (v, asked[k]) for k, v in asdict(saved).items() if v != asked[k]}
            raise SystemExit(
                f"{out} holds a study with another profile (saved vs asked: {diff}); "
                "use a fresh --out, or leave --profile out to continue the saved one"
            )
        return saved
    if p is None:
        raise SystemExit(f"{out} holds no study (no profile.json): give --profile or --quick")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(p))
    return p


def gather(out: Path, p: Profile) -> dict[str, Any]:
    """``results.json``'s content from the result files present: curves, noise, what is missing."""
    results: dict[str, Any] = {"profile": asdict(p), "runs": {}, "noise": {}, "missing": []}
    batches: dict[str, dict[str, set[str]]] = {}
    keys = all_runs(p)
    for key in keys:
        path = key.result_path(out)
        if not path.is_file():
            results["missing"].append(str(key))
            continue
        r = json.loads(path.read_text())
        results["runs"].setdefault(key.setting, {}).setdefault(key.method, {})[str(key.seed)] = r
        if r.get("noise"):
            results["noise"].setdefault(key.setting, {})[key.method] = r["noise"]
            batches.setdefault(key.setting, {}).setdefault(r["format"], set()).add(
                r["noise"]["batch"]
            )
    results["planned"] = len(keys)
    results["batch_mismatch"] = {
        st: {f: sorted(v) for f, v in fmts.items() if len(v) > 1}
        for st, fmts in batches.items()
        if any(len(v) > 1 for v in fmts.values())
    }
    sft = out / "sft.json"
    results["sft"] = json.loads(sft.read_text()) if sft.is_file() else None
    results["train_seconds"] = sum(
        r["seconds"] for ms in results["runs"].values() for ss in ms.values() for r in ss.values()
    )
    return results


def report(out: Path, p: Profile) -> dict[str, Any]:
    results = gather(out, p)
    results["table"] = summarise(results)
    (out / "table.md").write_text(markdown(results, results["table"]))
    results["plots"] = [str(x) for x in plot(results, out)] if results["runs"] else []
    write_json(out / "results.json", results)
    return results


def study(
    p: Profile,
    out: Path,
    *,
    workers: int = 1,
    device: str = "cpu",
    only: list[RunKey] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run every run of ``p`` (or ``only`` those) that ``out`` has no result for, then report.
    ``workers`` > 1: that many runs at once, each in a process of its own."""
    p = open_study(out, p)
    t0 = time.perf_counter()
    shared_sft(out, p, _settings(p.max_steps, p.eval_split), device)
    todo = [k for k in (only or all_runs(p)) if not k.result_path(out).is_file()]
    print(f"{len(todo)} run(s) to do in {out}", flush=True)
    failed: list[RunKey] = []
    if workers > 1:
        failed = run_parallel(out, todo, workers, device, threads)
    else:
        for key in todo:
            print(_describe(key, one_run(out, p, key, device)), flush=True)
    results = report(out, p)
    if not failed and not results["missing"]:
        shutil.rmtree(out / "work", ignore_errors=True)
    results["seconds"] = time.perf_counter() - t0
    results["failed"] = [str(k) for k in failed]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--quick", action="store_true", help="the quick profile (<= 30 min)")
    parser.add_argument("--out", default="runs/sample_efficiency")
    parser.add_argument("--eval-split", choices=EVAL_SPLITS, help="held-out manifest")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, help="torch threads per worker")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--settings", help="comma-separated subset to run (default: all)")
    parser.add_argument("--methods", help="comma-separated subset to run (default: all)")
    parser.add_argument("--seeds", help="comma-separated subset to run (default: all)")
    parser.add_argument("--report", action="store_true", help="only rebuild table and plots")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # SETTING/METHOD/SEED: one worker's run
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out)
    if args.quick:
        if args.profile not in (None, "quick"):
            parser.error("--quick is --profile quick; give one of them")
        args.profile = "quick"
    p = PROFILES[args.profile] if args.profile else None
    if p is None and args.eval_split:
        parser.error("--eval-split belongs to a profile: give --profile (or --quick) with it")
    if p is not None and args.eval_split:
        p = dataclasses.replace(p, eval_split=args.eval_split)

    if args.run:  # a worker process of run_parallel
        if args.threads:
            torch.set_num_threads(args.threads)
        one_run(out, open_study(out, None), RunKey.parse(args.run), args.device)
        return
    if args.report:
        res = report(out, open_study(out, p))
    else:
        saved = open_study(out, p)
        pick = {
            "setting": args.settings.split(",") if args.settings else saved.settings,
            "method": args.methods.split(",") if args.methods else saved.methods,
            "seed": [int(x) for x in args.seeds.split(",")] if args.seeds else saved.seeds,
        }
        for what, names, known in (
            ("--settings", pick["setting"], saved.settings),
            ("--methods", pick["method"], saved.methods),
            ("--seeds", pick["seed"], saved.seeds),
        ):
            if unknown := [x for x in names if x not in known]:
                parser.error(f"{what}: {unknown} not in the study's profile {list(known)}")
        only = [
            k
            for k in all_runs(saved)
            if k.setting in pick["setting"]
            and k.method in pick["method"]
            and k.seed in pick["seed"]
        ]
        if not only:
            parser.error(f"--settings/--methods/--seeds select no run of the profile: {pick}")
        res = study(
            saved, out, workers=args.workers, device=args.device, only=only, threads=args.threads
        )
    print()
    print((out / "table.md").read_text())
    sft = res.get("sft") or {}
    print(
        f"SFT {sft.get('seconds', float('nan')):.0f} s; training {res['train_seconds'] / 60:.1f} "
        f"min over {res['planned'] - len(res['missing'])} of {res['planned']} runs"
        + (f"; this invocation {res['seconds'] / 60:.1f} min" if "seconds" in res else "")
        + "; plots: "
        + ", ".join(res["plots"])
    )
    if res.get("failed"):
        print(f"FAILED runs (see logs/): {res['failed']}")
    if args.json:
        print(
            json.dumps(
                {
                    "profile": args.profile or "saved",
                    "seconds": res.get("seconds"),
                    "missing": len(res["missing"]),
                    "table": res["table"],
                    "noise": res["noise"],
                }
            )
        )
    if res.get("failed"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
