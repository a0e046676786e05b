"""``hiper train --dry-run``: check what a run needs and say what it would do, writing nothing.

Checked: the config (already, when it loaded), the device, the model folder (a named model only
when it is prepared: preparing it is not cheap), the environment with its training options and
every evaluation split's manifest and options, and the run folder (checkpoints refuse a fresh
start, as the trainer does). Nothing is built, loaded, trained or written.
"""

from __future__ import annotations

from pathlib import Path

from hiper.train.config import TRAINING_TASKS, TrainConfig


def run_plan(cfg: TrainConfig, *, resume: bool = False) -> str:
    """The plan of a run as text; raises the trainer's own (user) errors for what it would
    refuse."""
    from hiper.algos.base import get_estimator
    from hiper.envs.base import load_manifest, make_env
    from hiper.models.policy import check_device
    from hiper.runs.checkpoints import list_checkpoints
    from hiper.train.loop import BASE_MODEL_DIR, env_options

    check_device(cfg.model.device, "model.device")
    model = _model_line(cfg.model.path, "model.path")
    if cfg.model.critic == "separate" and cfg.model.critic_path is not None:
        model += f"; critic from {_model_line(cfg.model.critic_path, 'model.critic_path')}"

    make_env(cfg.env.name, **env_options(cfg, cfg.env.train_split)).close()
    splits = [cfg.env.eval_split, *(s for s in cfg.eval.extra_splits if s != cfg.env.eval_split)]
    for split in splits:
        if split == TRAINING_TASKS:
            continue
        manifest = cfg.env.eval_manifest if split == cfg.env.eval_split else None
        load_manifest(cfg.env.name, manifest or split)
        make_env(cfg.env.name, **env_options(cfg, split)).close()

    run_dir = Path(cfg.run_dir)
    ckpts = list_checkpoints(run_dir) if run_dir.is_dir() else []
    if ckpts and not resume:
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already holds checkpoints; pass --resume to "
            "continue it or choose another run_dir"
        )
    if ckpts:
        folder = f"{run_dir} (resumes from its checkpoint {ckpts[-1].name})"
    elif run_dir.exists():
        folder = f"{run_dir} (exists, no checkpoint: {'reused' if resume else 'started afresh'})"
    else:
        folder = f"{run_dir} (new)"

    spec = get_estimator(cfg.algo.estimator)
    r, s, e = cfg.rollout, cfg.sft, cfg.eval
    critic = (
        f"critic {cfg.model.critic}, value heads {', '.join(spec.heads(cfg.algo.estimator_config))}"
        if spec.needs_values
        else "no critic"
    )
    tasks = f"{r.tasks_per_iteration} tasks x {r.group_size} episodes per iteration"
    if r.task_pool is not None:
        tasks += f", a fixed pool of {r.task_pool} training tasks"
    stages = []
    if cfg.model.path is None:
        t = cfg.model.tiny
        stages.append(
            f"build a tiny Qwen2 model ({t.num_layers} layers, hidden {t.hidden_size}, vocab "
            f"{t.vocab_size}) and its tokenizer under {run_dir / BASE_MODEL_DIR}"
        )
    warm = s.episodes > 0 and (s.epochs > 0 or (s.critic_steps > 0 and spec.needs_values))
    if warm and s.epochs > 0:
        stages.append(
            f"SFT: {s.episodes} expert episodes (noise {s.noise}), {s.epochs} epoch(s), "
            f"{s.batch_rows} rows per step, lr {s.lr}"
        )
    if r.pool_screen:
        stages.append(
            f"screen the pool: the first {r.task_pool} training tasks won {r.pool_min_wins}+ "
            f"times in {r.pool_screen} episodes"
        )
    if warm and s.critic_steps > 0 and spec.needs_values:
        source = f"{s.critic_episodes} policy episodes" if s.critic_episodes else "demonstrations"
        stages.append(f"value pre-training: {s.critic_steps} steps on the returns of {source}")
    n_tasks = {}
    for split in splits:
        n = e.tasks
        if split == TRAINING_TASKS and r.task_pool is not None:
            n = min(e.tasks or r.task_pool, r.task_pool)
        n_tasks[split] = f"{split} ({n or 'all'} tasks)"
    evals = f"{', '.join(n_tasks.values())}, {e.seeds} seed(s) each"
    stages.append(f"evaluate at iteration 0: {evals}")
    if cfg.iterations:
        ppo = f"PPO: iterations 1-{cfg.iterations}, {tasks}"
        if cfg.critic_warmup:
            ppo += f"; the first {cfg.critic_warmup} update only the critic"
        if e.every:
            ppo += f"; evaluation on {cfg.env.eval_split} every {e.every}"
        stages.append(ppo)
        stages.append(f"evaluate at iteration {cfg.iterations}: {evals}")
    lines = [
        f"run folder: {folder}",
        f"model:      {model} on {cfg.model.device} ({cfg.model.dtype})",
        f"env:        {cfg.env.name}, train split {cfg.env.train_split}, {cfg.env.workers} "
        f"workers ({cfg.env.backend}), options {dict(cfg.env.options)}",
        f"estimator:  {cfg.algo.estimator} {dict(cfg.algo.config)} ({critic})",
        f"iterations: {cfg.iterations} ({tasks}; checkpoint every {cfg.checkpoint_every})",
        f"prompts:    {r.format}, history {r.history_len}, instructions "
        f"{'on' if r.instructions else 'off'}, max {r.max_turns} turns, "
        f"{r.max_new_tokens} new tokens, temperature {r.temperature}",
        "stages:",
        *(f"  {i}. {text}" for i, text in enumerate(stages, 1)),
        "dry run: nothing was trained or written",
    ]
    return "\n".join(lines)


def _model_line(path: str | None, key: str) -> str:
    """What a ``model.path``-like value names, checked as far as it is cheap."""
    from hiper.models.named import NAMED_MODELS, is_prepared, model_dir
    from hiper.models.policy import check_model_folder

    if path is None:
        return "a tiny model built on the fly"
    if path in NAMED_MODELS and not Path(path).exists():
        if not is_prepared(path):
            return (
                f"named model {path} (not prepared yet: the run prepares it first, or "
                f"`hiper models prepare {path}`)"
            )
        check_model_folder(model_dir(path))
        return f"named model {path} ({model_dir(path)})"
    check_model_folder(path)
    if not Path(path).is_dir():
        return f"{path} (not a local folder: loaded as a Hugging Face hub id)"
    return path
