"""Does hierarchy pay? Sample efficiency of HiPER (HAE) against the flat baselines, measured.

    python benchmarks/sample_efficiency.py --profile quick [--out DIR] [--json]
    python benchmarks/sample_efficiency.py --profile full  [--out DIR] [--json]

One shared SFT checkpoint (a tiny model trained on noisy household expert demonstrations of every
setting, in both prompt formats), then, per setting, method and seed, PPO training from that
checkpoint with the same budget of environment steps, evaluating held-out success (unseen rooms,
the fixed manifest, T = 0.4) at regular step intervals. Methods:

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
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiper.models.policy import load_policy
from hiper.rollout import Task
from hiper.train.batch import micro_batches, pad_token_id, select_rows
from hiper.train.config import SFTConfig, load_train_config
from hiper.train.loop import Trainer
from hiper.train.losses import policy_loss
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


def _settings(max_steps: int) -> dict[str, Setting]:
    out = {
        f"chain{k}": Setting(
            {"chain_depth": k, "max_steps": max_steps},
            f"chain{k}-eval_out_of_distribution",
            k * max_steps,
        )
        for k in (2, 4, 6)
    }
    out["types"] = Setting({"max_steps": max_steps}, "eval_out_of_distribution", max_steps)
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


def shared_sft(out: Path, p: Profile, settings: dict[str, Setting]) -> tuple[Path, float]:
    """A tiny model SFT-trained on noisy expert demos of every setting in both prompt formats
    (the quickstart's SFT recipe: noise 0.2, one epoch, batch 16, lr 5e-3, 30 warm-up steps)."""
    from hiper.models.tiny import build_tiny_model, household_corpus

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
    policy = load_policy(base, reference=False)
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
    train_sft(policy, examples, recipe)
    sft_dir = out / "sft_model"
    policy.lm.save_pretrained(sft_dir)
    tok.save_pretrained(sft_dir)
    return sft_dir, time.perf_counter() - t0


# -- one training run ---------------------------------------------------------------------------


def run_config(run_dir: Path, sft_dir: Path, p: Profile, s: Setting, m: Method, seed: int):
    overrides = [
        f"run_dir={run_dir}",
        f"model.path={sft_dir}",
        "sft.episodes=0",
        f"seed={seed}",
        f"env.options={json.dumps(s.options)}",
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


def train_run(
    tr: Trainer, p: Profile, start_success: float | None
) -> tuple[list[list[float]], float | None, list[dict[str, float]]]:
    """Train until the step budget. Returns ``[[env steps, held-out success], ...]`` from step 0,
    the SFT start's success, and per iteration the steps, training success and the critic's
    explained variance per head (for the "why" when a curve stays flat)."""
    start = tr.evaluate(0)["eval/success"] if start_success is None else start_success
    curve = [[0, start]]
    trace = []
    steps, it, next_eval = 0, 0, p.eval_every_steps
    while steps < p.budget_steps:
        it += 1
        m = tr.train_iteration(it)
        steps += int(m["train/turns"])
        trace.append(
            {"steps": steps, "train_success": m["train/success"]}
            | {k.split("/")[-1]: v for k, v in m.items() if k.startswith("ppo/explained_var/")}
        )
        if steps >= next_eval or steps >= p.budget_steps:
            curve.append([steps, tr.evaluate(it)["eval/success"]])
            while next_eval <= steps:
                next_eval += p.eval_every_steps
    return curve, start, trace


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
    grads = []
    tr.policy.train()
    for chunk in order.chunk(parts):
        sub = select_rows(b, chunk)
        for q in params:
            q.grad = None
        n_tok = max(sub.num_tokens, 1)
        for micro in micro_batches(sub, cfg.ppo.micro_batch_rows, None, pad_token_id(tr.policy)):
            out = tr.policy(micro.input_ids, micro.attention_mask)
            loss, _ = policy_loss(
                out.logprobs.float(),
                micro.old_logprobs,
                micro.advantages,
                micro.loss_mask,
                normalizer=n_tok,
            )
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
    return next((float(s) for s, v in curve if v >= threshold - 1e-9), None)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per setting and method: final success (mean, std over seeds), mean steps to 50 % / 80 %
    (over the seeds that reached it; None if none did), and the flat-best / HiPER step ratios."""
    table: dict[str, Any] = {}
    for setting, methods in results["runs"].items():
        rows = {}
        for name, seeds in methods.items():
            curves = [r["curve"] for r in seeds.values()]
            finals = [c[-1][1] for c in curves]
            row = {"final_mean": float(np.mean(finals)), "final_std": float(np.std(finals))}
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
        "| setting | method | final success | steps to 50 % | steps to 80 % | flat-best / HiPER (80 %) | grad noise | Var A |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, rows in table.items():
        for name, r in rows.items():
            gn = results["noise"].get(setting, {}).get(name, {})
            lines.append(
                f"| {setting} | {name} | {100 * r['final_mean']:.1f} ± {100 * r['final_std']:.1f} % "
                f"| {_cell(r['steps_to_50'])} ({r['reached_50']}) "
                f"| {_cell(r['steps_to_80'])} ({r['reached_80']}) "
                f"| {_cell(r.get('ratio_80'), '{:.2f}x') if not METHODS[name].flat else ''} "
                f"| {_cell(gn.get('grad_noise'), '{:.2f}')} | {_cell(gn.get('adv_var'), '{:.2f}')} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for setting, methods in results["runs"].items():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for name, seeds in methods.items():
            curves = [r["curve"] for r in seeds.values()]
            n = min(len(c) for c in curves)
            x = np.mean([[pt[0] for pt in c[:n]] for c in curves], axis=0)
            y = np.array([[pt[1] for pt in c[:n]] for c in curves])
            mean, std = y.mean(0), y.std(0)
            style = "-" if not METHODS[name].flat else "--"
            ax.plot(x, 100 * mean, style, marker="o", ms=3, label=name)
            ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), alpha=0.15)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("held-out success (%)")
        ax.set_title(
            f"household {setting}: mean ± std over {len(results['profile']['seeds'])} seed(s)"
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


def study(p: Profile, out: Path) -> dict[str, Any]:
    settings = _settings(p.max_steps)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    sft_dir, sft_s = shared_sft(work, p, settings)
    results: dict[str, Any] = {
        "profile": asdict(p),
        "sft_seconds": sft_s,
        "runs": {},
        "noise": {},
    }
    for setting in p.settings:
        s = settings[setting]
        starts: dict[tuple[str, int], float] = {}  # SFT start per (format, seed): the same model
        batches: dict[str, Any] = {}
        for name in p.methods:
            m = METHODS[name]
            for seed in p.seeds:
                t1 = time.perf_counter()
                run_dir = work / f"{setting}-{name}-{seed}"
                tr = Trainer(run_config(run_dir, sft_dir, p, s, m, seed))
                tr._setup()
                try:
                    if seed == p.seeds[0] and m.format not in batches:
                        batches[m.format] = collect_batch(tr, p.noise_tasks, 0)
                    curve, start, trace = train_run(tr, p, starts.get((m.format, seed)))
                    starts[(m.format, seed)] = start
                    noise = gradient_noise(tr, batches[m.format]) if seed == p.seeds[0] else None
                finally:
                    tr.close()
                results["runs"].setdefault(setting, {}).setdefault(name, {})[str(seed)] = {
                    "curve": curve,
                    "train": trace,
                    "seconds": time.perf_counter() - t1,
                }
                if noise is not None:
                    results["noise"].setdefault(setting, {})[name] = noise
                print(
                    f"{setting:7s} {name:22s} seed {seed}: held-out "
                    + " ".join(f"{100 * v:.0f}%@{s_:.0f}" for s_, v in curve)
                    + f"  ({time.perf_counter() - t1:.0f} s)",
                    flush=True,
                )
    results["seconds"] = time.perf_counter() - t0
    results["table"] = summarise(results)
    (out / "table.md").write_text(markdown(results, results["table"]))
    results["plots"] = [str(x) for x in plot(results, out)]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", default="runs/sample_efficiency")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    res = study(PROFILES[args.profile], Path(args.out))
    print()
    print(Path(args.out, "table.md").read_text())
    print(
        f"SFT {res['sft_seconds']:.0f} s; whole study {res['seconds'] / 60:.1f} min; plots: "
        + ", ".join(res["plots"])
    )
    if args.json:
        print(
            json.dumps(
                {
                    "profile": args.profile,
                    "seconds": res["seconds"],
                    "table": res["table"],
                    "noise": res["noise"],
                }
            )
        )


if __name__ == "__main__":
    main()
