"""The HiPER training driver: (tiny model) -> SFT warm start -> PPO iterations with evaluation.

Every source of randomness is derived from ``(seed, iteration)`` (task seeds, sampling seeds,
mini-batch shuffles), and a checkpoint holds model, optimizer and RNG states, so a run resumed from
its last checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hiper import seeds
from hiper.algos.base import get_estimator
from hiper.config import to_dict
from hiper.engines.hf import HFEngine, chat_prompt_ids
from hiper.envs.base import get_env_spec, make_env
from hiper.envs.pool import EnvPool
from hiper.eval import evaluate_policy, manifest_task_ids
from hiper.models.named import resolve_model_path
from hiper.models.policy import check_device, check_model_folder, load_policy
from hiper.protocol.masks import TokenAligner
from hiper.rollout import Task, rollout
from hiper.runs.checkpoints import (
    Checkpoint,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    remove_leftovers,
    restore_rng_state,
    restore_state,
    save_checkpoint,
)
from hiper.runs.faults import crash_point
from hiper.runs.lock import RunLock
from hiper.runs.log import MetricsLogger, TrajectoryLog, atomic_write_text, fsync_dir
from hiper.train.config import TRAINING_TASKS, TrainConfig
from hiper.train.critic_pretrain import (
    demonstration_returns,
    episode_examples,
    episode_returns,
    pretrain_critic,
)
from hiper.train.distributed import (
    SINGLE,
    Dist,
    full_optimizer_state,
    full_parameters,
    full_state_dict,
    is_sharded,
    shard_model,
    shard_optimizer_state,
)
from hiper.train.ppo import critic_update, make_optimizer, ppo_update
from hiper.train.prepare import prepare_batch
from hiper.train.sft import expert_examples, train_sft
from hiper.types import SWITCH, Trajectory

Progress = Callable[[str, dict[str, Any]], None]

#: The screened pool of a run (``rollout.pool_screen``): its task seeds and every candidate's wins.
POOL_FILE = "pool.json"
#: Screening gives up after this many candidates per pool task.
MAX_CANDIDATES_PER_TASK = 8
#: The stages before iteration 1, each written atomically: the tiny base model, the SFT model (a
#: plain model folder, plus the SFT metrics and the RNG state at the end of SFT) and the mid-SFT
#: checkpoints (``<SFT_STATE_DIR>/checkpoints``, removed once the SFT model is written).
BASE_MODEL_DIR, SFT_MODEL_DIR, SFT_STATE_DIR = "base_model", "sft_model", "sft"
SFT_METRICS_FILE, SFT_RNG_FILE = "sft.json", "rng.pt"
#: Everything a run writes; a fresh start into a folder without a checkpoint removes these first.
RUN_FILES = (
    BASE_MODEL_DIR,
    SFT_MODEL_DIR,
    SFT_STATE_DIR,
    "checkpoints",
    "metrics.jsonl",
    "trajectories.jsonl",
    "summary.json",
    "tb",
    POOL_FILE,
)
#: The truncation reasons of episodes the policy did not end: dropped from the update.
LOST = ("worker_lost",)


def env_options(cfg: TrainConfig, split: str) -> dict[str, Any]:
    """The environment's options for ``split`` (only environments with a ``split`` option)."""
    opts = dict(cfg.env.options)
    fields = {f.name for f in dataclasses.fields(get_env_spec(cfg.env.name).options)}
    if "split" in fields:
        opts["split"] = split
    return opts


def training_seeds(
    cfg: TrainConfig, iteration: int | None, pool: Sequence[int] | None = None
) -> list[int]:
    """The environment seeds of the tasks iteration ``iteration`` plays: new ones every
    iteration, or, with ``rollout.task_pool`` N, the next ``tasks_per_iteration`` of the pool's N
    in turn. ``iteration=None``: the whole pool. ``pool``: the pool's seeds when they were
    screened (``rollout.pool_screen``; default the first N)."""
    r = cfg.rollout
    base = seeds.task_seed_base(cfg.seed)
    if r.task_pool is None:
        if iteration is None:
            raise ValueError("the run has no fixed pool of training tasks (rollout.task_pool)")
        return [base + iteration * r.tasks_per_iteration + j for j in range(r.tasks_per_iteration)]
    chosen = list(pool) if pool is not None else [base + j for j in range(r.task_pool)]
    if iteration is None:
        return chosen
    first = (iteration - 1) * r.tasks_per_iteration
    return [chosen[(first + j) % len(chosen)] for j in range(r.tasks_per_iteration)]


def iteration_tasks(
    cfg: TrainConfig, iteration: int, tag: str = "", pool: Sequence[int] | None = None
) -> list[Task]:
    """The episodes iteration ``iteration`` plays: each of its tasks ``rollout.group_size`` times,
    one group per task (group id ``<tag><iteration>:<j>``)."""
    return [
        Task(seed=s, group_id=f"{tag}{iteration}:{j}")
        for j, s in enumerate(training_seeds(cfg, iteration, pool))
        for _ in range(cfg.rollout.group_size)
    ]


def screen_tasks(
    first: int,
    wins_of: Callable[[list[int]], list[int]],
    *,
    keep: int,
    per_call: int,
    limit: int,
    min_wins: int = 1,
) -> tuple[list[int], dict[int, int]]:
    """Screen the task seeds ``first, first + 1, ...``, ``per_call`` at a time (``wins_of(seeds)``
    plays them and returns each one's wins), until ``keep`` of them have won ``min_wins`` times or
    more, or ``limit`` were tried. Returns the kept seeds, in order, and every tried seed's wins."""
    kept: list[int] = []
    wins: dict[int, int] = {}
    while len(kept) < keep and len(wins) < limit:
        wave = [first + len(wins) + j for j in range(min(per_call, limit - len(wins)))]
        for sd, w in zip(wave, wins_of(wave), strict=True):
            wins[sd] = int(w)
            if w >= min_wins and len(kept) < keep:
                kept.append(sd)
    return kept, wins


def build_base_model(cfg: TrainConfig, run_dir: Path) -> Path:
    """``model.path`` (a named model: its prepared folder, prepared on first use), or the tiny
    model built (once) under ``<run_dir>/base_model``."""
    if cfg.model.path is not None:
        return Path(resolve_model_path(cfg.model.path))
    out = run_dir / BASE_MODEL_DIR
    if out.is_dir():  # it only ever appears complete: written aside, then renamed
        return out
    from hiper.demos import household_corpus
    from hiper.models.tiny import build_tiny_model

    t = cfg.model.tiny
    corpus = household_corpus(n_episodes=t.corpus_episodes, seed=cfg.seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{BASE_MODEL_DIR}-", dir=run_dir))
    build_tiny_model(
        tmp,
        corpus,
        vocab_size=t.vocab_size,
        hidden_size=t.hidden_size,
        num_layers=t.num_layers,
        num_heads=t.num_heads,
        seed=cfg.seed,
    )
    crash_point("base_model")
    os.replace(tmp, out)
    fsync_dir(run_dir)
    return out


def drop_lost(trajs: list[Trajectory], keep: bool = False) -> tuple[list[Trajectory], int]:
    """The episodes an update may learn from, and how many were cut short by a lost environment
    worker (:data:`LOST`): those say nothing about the policy and are left out unless ``keep``."""
    lost = [bool(t.turns) and t.turns[-1].info.get("truncation") in LOST for t in trajs]
    kept = trajs if keep else [t for t, gone in zip(trajs, lost, strict=True) if not gone]
    return kept, sum(lost)


def idle_ranks(cfg: TrainConfig, world_size: int) -> list[str]:
    """What leaves processes idle: a step is split between the ranks by its micro-batches, so a
    step of fewer micro-batches than ranks keeps some of them waiting (results are unaffected)."""
    if world_size == 1:
        return []
    out = []
    steps = (
        ("sft", cfg.sft.batch_rows, cfg.sft.micro_batch_rows),
        ("ppo", cfg.ppo.mini_batch_rows, cfg.ppo.micro_batch_rows),
    )
    for section, step, micro in steps:
        if step is not None and -(-step // (micro or step)) < world_size:
            rows = "batch_rows" if section == "sft" else "mini_batch_rows"
            out.append(
                f"{section}.{rows}={step} in micro-batches of {micro or step} rows is fewer "
                f"micro-batches than the {world_size} processes: some wait at every step; set "
                f"{section}.micro_batch_rows to at most {max(step // world_size, 1)}"
            )
    return out


def peak_memory_gb(device: torch.device) -> float:
    """The process's peak memory so far, in GB: the accelerator's peak allocation on CUDA, the
    peak resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def episode_metrics(trajs: list[Trajectory], prefix: str) -> dict[str, float]:
    """Success overall and per task type, episode length, switch rate, segment length, invalid
    rate, and, where the environment reports subtasks (household chains), subtask progress."""
    m: dict[str, float] = {}
    if not trajs:
        return m
    m[f"{prefix}/success"] = float(np.mean([tr.success for tr in trajs]))
    m[f"{prefix}/score"] = float(np.mean([tr.score for tr in trajs]))
    m[f"{prefix}/episode_length"] = float(np.mean([len(tr.turns) for tr in trajs]))
    by_type: dict[str, list[bool]] = defaultdict(list)
    for tr in trajs:
        by_type[tr.task_type or "all"].append(tr.success)
    for k, v in sorted(by_type.items()):
        m[f"{prefix}/success/{k}"] = float(np.mean(v))
    turns = [t for tr in trajs for t in tr.turns]
    decisions = [t for tr in trajs for t in tr.turns[1:]]
    m[f"{prefix}/invalid_rate"] = float(np.mean([not t.decision.valid for t in turns]))
    if decisions:
        m[f"{prefix}/switch_rate"] = float(
            np.mean([t.decision.switch == SWITCH for t in decisions])
        )
    segments = sum(1 + sum(t.decision.switch == SWITCH for t in tr.turns[1:]) for tr in trajs)
    m[f"{prefix}/segment_length"] = len(turns) / max(segments, 1)
    # chain tasks: the fraction of subtasks done, which moves before success does
    ends = [tr.turns[-1].info for tr in trajs if tr.turns]
    if ends and len(ends) == len(trajs) and all(e.get("subtasks") for e in ends):
        m[f"{prefix}/subtask_progress"] = float(
            np.mean([e["subtasks_done"] / e["subtasks"] for e in ends])
        )
    return m


class Trainer:
    """One run. ``dist``: this process's place among torchrun's ranks
    (:func:`hiper.train.distributed.init_from_env`). Every rank plays its shards of each rollout
    (``rollout.shards``), the episodes are gathered, and every rank prepares the whole batch
    and takes the same update, each doing its share of the forwards and backwards; rank 0
    alone evaluates and writes the run folder (``progress`` is only called there)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        progress: Progress | None = None,
        dist: Dist = SINGLE,
    ):
        shards = cfg.rollout.shards
        if shards % dist.world_size:
            raise ValueError(
                f"rollout.shards={shards} cannot be split between {dist.world_size} processes: "
                f"set rollout.shards to a multiple of {dist.world_size} (a run's results depend "
                "on rollout.shards, not on the number of processes)"
            )
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.resume = resume
        self.dist = dist
        self.main = dist.is_main
        self.progress = (progress if self.main else None) or (lambda event, data: None)

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> int:
        cfg = self.cfg
        # what can be checked before anything is built or written
        check_device(cfg.model.device, "model.device")
        if cfg.model.path is not None:
            check_model_folder(resolve_model_path(cfg.model.path))

        def prepare_folder() -> Checkpoint | None:
            ckpt = self._prepare_folder()
            for line in idle_ranks(cfg, self.dist.world_size):
                self.progress("notice", {"message": line})
            return ckpt

        # the run folder is rank 0's: the others wait, then read it (or stop with its error)
        ckpt = self.dist.on_main(prepare_folder)
        torch.manual_seed(cfg.seed)
        base = Path(self.dist.on_main(lambda: str(build_base_model(cfg, self.run_dir))))
        # building the tiny model draws from the RNG on rank 0 only: the others take its state
        restore_rng_state(self.dist.broadcast(capture_rng_state()))
        m = cfg.model
        if ckpt is not None:
            self.policy = self._ready(load_policy(ckpt.policy_dir, device=m.device, dtype=m.dtype))
        else:
            self.policy = self._load_fresh(base)
        self.tokenizer = self.policy.tokenizer
        self.aligner = TokenAligner(self.tokenizer)
        self.optimizer = make_optimizer(self.policy, cfg.ppo)
        if ckpt is not None:  # an RL checkpoint: the RL iterations' sharding (model.fsdp)
            self._shard()
        self.metrics = self.trajlog = None  # rank 0 alone logs
        if self.main:
            self.metrics = MetricsLogger(
                self.run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb
            )
            self.trajlog = TrajectoryLog(self.run_dir)
        start = 0
        self.pool: list[int] | None = None  # the screened pool's seeds (rollout.pool_screen)
        if ckpt is not None and cfg.rollout.pool_screen:
            path = self.run_dir / POOL_FILE
            if not path.is_file():
                raise FileNotFoundError(
                    f"{str(path)!r} is missing: it holds the screened pool of tasks "
                    "(rollout.pool_screen) that this run trained on; without it the run "
                    "cannot be resumed"
                )
            self.pool = [int(x) for x in json.loads(path.read_text())["seeds"]]
        if ckpt is not None:
            restore_state(ckpt, self.optimizer)  # the one-process state, whatever wrote it ...
            shard_optimizer_state(self.optimizer)  # ... cut as the parameters are (model.fsdp)
            start = ckpt.iteration + 1
            if self.main:
                self.metrics.truncate_after(ckpt.iteration)
                self.trajlog.truncate_after(ckpt.iteration)
        probe_env = make_env(cfg.env.name, **env_options(cfg, cfg.env.train_split))
        self.family = probe_env.family  # which prompt template family the environment uses
        probe_env.close()
        self.train_pool = EnvPool(
            cfg.env.name,
            cfg.env.workers,
            backend=cfg.env.backend,
            options=env_options(cfg, cfg.env.train_split),
        )
        self.eval_sets: dict[str, tuple[EnvPool, list[str]]] = {}
        return start

    def _prepare_folder(self) -> Checkpoint | None:
        """Lock the run folder, clear what a crash left, and return the checkpoint to resume
        from (None: start from iteration 0, without the logs of any earlier attempt)."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.run_dir).acquire()  # before anything in the folder is touched
        remove_leftovers(self.run_dir)
        for p in self.run_dir.glob(".tmp-*"):  # a base or SFT model cut off while written
            shutil.rmtree(p, ignore_errors=True)
        ckpt = None
        if self.resume:
            ckpt = self._resume_checkpoint()
        elif list_checkpoints(self.run_dir):
            raise FileExistsError(
                f"run directory {str(self.run_dir)!r} already holds checkpoints; pass --resume to "
                "continue it or choose another run_dir"
            )
        if ckpt is None:
            # no checkpoint: the logs describe nothing that survives; a fresh start also drops
            # the base and SFT models (the config may differ), a resume continues them
            kept = (BASE_MODEL_DIR, SFT_MODEL_DIR, SFT_STATE_DIR) if self.resume else ()
            for name in RUN_FILES:
                path = self.run_dir / name
                if name not in kept and path.is_dir():
                    shutil.rmtree(path)
                elif name not in kept:
                    path.unlink(missing_ok=True)
        atomic_write_text(
            self.run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False)
        )
        return ckpt

    def _resume_checkpoint(self) -> Checkpoint | None:
        """The newest intact checkpoint (saying which were passed over and why), or None when the
        run has none yet: then it starts from the beginning, reusing what the folder holds of
        the base model and SFT."""
        if not list_checkpoints(self.run_dir):
            self.progress(
                "notice",
                {
                    "message": f"{str(self.run_dir)!r} holds no checkpoint yet: starting from "
                    "iteration 0 (its base model and SFT progress are reused)"
                },
            )
            return None
        ckpt = load_checkpoint(self.run_dir, fallback=True)
        for reason in ckpt.skipped:
            self.progress(
                "notice", {"message": f"{reason}; resuming from {ckpt.path.name} instead"}
            )
        return ckpt

    def _ready(self, policy):
        """``policy`` with the run's runtime settings (``model.activation_checkpointing``)."""
        if self.cfg.model.activation_checkpointing:
            policy.checkpoint_activations()
        return policy

    def _shard(self) -> None:
        """With ``model.fsdp`` under more than one process: shard the policy with FSDP2 and
        rebuild the optimizer over the shards, its state carried over. SFT and value
        pre-training keep whole replicas; the RL iterations run sharded."""
        if not self.cfg.model.fsdp or self.dist.world_size == 1 or is_sharded(self.policy):
            return
        state = self.optimizer.state_dict()
        shard_model(self.policy, self.dist, mixed_precision=self.cfg.model.mixed_precision)
        self.optimizer = make_optimizer(self.policy, self.cfg.ppo)
        self.optimizer.load_state_dict(state)
        shard_optimizer_state(self.optimizer)

    def _load_fresh(self, path: Path):
        m = self.cfg.model
        return self._ready(
            load_policy(
                path,
                device=m.device,
                dtype=m.dtype,
                lora=m.lora,
                critic=m.critic,
                critic_path=m.critic_path,
                heads=get_estimator(self.cfg.algo.estimator).heads(self.cfg.algo.estimator_config),
                value_readout=m.value_readout,
                value_scale=m.value_scale,
            )
        )

    def _engine(self, *, greedy: bool, temperature: float) -> HFEngine:
        r = self.cfg.rollout
        return HFEngine(
            self.policy.lm,
            self.tokenizer,
            max_new_tokens=r.max_new_tokens,
            temperature=temperature,
            top_p=r.top_p if not greedy else 1.0,
        )

    def _play(
        self,
        pool,
        tasks: list[Task],
        *,
        seed: int,
        greedy: bool,
        temperature: float,
        max_turns: int,
    ):
        engine = self._engine(greedy=greedy, temperature=temperature)
        calls = iter(range(10**9))
        r = self.cfg.rollout
        self.policy.eval()
        return rollout(
            pool,
            lambda p: engine.generate(
                p, greedy=greedy, seed=seeds.generate_seed(seed, next(calls))
            ),
            lambda text: chat_prompt_ids(self.tokenizer, text),
            tasks,
            self.family,
            dataclasses.replace(r, max_turns=max_turns),
        )

    def _play_shards(self, tasks: list[Task], *, seed: int, **kwargs) -> list[Trajectory]:
        """:meth:`_play` of ``tasks`` on the training environments as ``rollout.shards``
        contiguous pieces, shard k sampled with ``seeds.shard_seed(seed, k)``: this rank plays
        its share of the shards and every rank gets every episode, in order. The episodes do not
        depend on how many processes there are (one shard is the plain rollout)."""
        n, shards = len(tasks), self.cfg.rollout.shards
        mine: list[Trajectory] = []
        with full_parameters(self.policy):  # a sharded model: whole on every rank meanwhile
            for k in self.dist.my_share(range(shards)):
                part = tasks[k * n // shards : (k + 1) * n // shards]
                mine += self._play(self.train_pool, part, seed=seeds.shard_seed(seed, k), **kwargs)
        return [t for part in self.dist.gather(mine) for t in part]

    def _play_for_critic(self, episodes: int) -> list[Trajectory]:
        """``episodes`` episodes of the current (SFT) policy on the tasks the first iterations
        will play, in groups of ``rollout.group_size``, at the rollout temperature, with the
        sampling seed of iteration 0 (training iterations start at 1); those of lost workers
        left out as in training."""
        cfg = self.cfg
        r = cfg.rollout
        tasks: list[Task] = []
        it = 1
        while len(tasks) < episodes:
            tasks += iteration_tasks(cfg, it, tag="critic:", pool=self.pool)
            it += 1
        trajs = self._play_shards(
            tasks[:episodes],
            seed=seeds.rollout_seed(cfg.seed, 0),
            greedy=False,
            temperature=r.temperature,
            max_turns=r.max_turns,
        )
        kept, _ = drop_lost(trajs, keep=r.keep_lost_episodes)  # a lost return is no target
        return kept

    # -- stages ---------------------------------------------------------------------------------
    def warm_start(self) -> dict[str, float]:
        """Everything before iteration 1: SFT on demonstrations, screening the pool of training
        tasks with the SFT policy, value pre-training."""
        cfg = self.cfg
        s = cfg.sft
        critic = s.critic_steps > 0 and get_estimator(cfg.algo.estimator).needs_values
        if s.episodes == 0 or (s.epochs == 0 and not critic):
            return self.screen_pool()
        t0 = time.perf_counter()
        examples = expert_examples(
            cfg.env.name,
            s.episodes,
            s.noise,
            s.seed,
            self.tokenizer,
            history_len=cfg.rollout.history_len,
            instructions=cfg.rollout.instructions,
            options=env_options(cfg, cfg.env.train_split),
            format=cfg.rollout.format,
        )
        m: dict[str, float] = {"sft/examples": float(len(examples))}
        if s.epochs > 0 and (self.run_dir / SFT_MODEL_DIR / SFT_METRICS_FILE).is_file():
            # a resumed run whose SFT had finished: its model, metrics and RNG state are kept
            m.update(json.loads((self.run_dir / SFT_MODEL_DIR / SFT_METRICS_FILE).read_text()))
            self._start_from_sft()
        elif s.epochs > 0:  # sft.epochs=0: only the critic learns from the demonstrations
            t_train = time.perf_counter()
            state = self.run_dir / SFT_STATE_DIR
            resume = None
            if list_checkpoints(state):  # only a resumed run keeps them (see _setup)
                resume = load_checkpoint(state, fallback=True)
                self.progress("notice", {"message": f"SFT resumes after step {resume.iteration}"})
                self.policy = self._ready(
                    load_policy(resume.policy_dir, device=cfg.model.device, dtype=cfg.model.dtype)
                )
            losses = train_sft(
                self.policy,
                examples,
                s,
                lambda step, total, loss: self.progress(
                    "sft", {"step": step, "total": total, "loss": loss}
                ),
                checkpoints=state,
                resume=resume,
                dist=self.dist,
            )
            m["sft/steps"] = float(len(losses))
            m["throughput/sft_tokens_per_s"] = (
                s.epochs
                * sum(len(e.prompt_ids) + len(e.response_ids) for e in examples)
                / max(time.perf_counter() - t_train, 1e-9)
            )
            m["sft/loss_first"] = float(losses[0])
            m["sft/loss_last"] = float(np.mean(losses[-max(1, len(losses) // 10) :]))
            m["time/sft_s"] = time.perf_counter() - t0
            if self.main:
                self._save_sft_model(m)
                shutil.rmtree(state, ignore_errors=True)
            self.dist.barrier()  # the SFT model is written
            self._start_from_sft()
        m.update(self.screen_pool())  # before the critic learns the returns of the pool's tasks
        if critic:
            t0 = time.perf_counter()
            gamma = float(getattr(cfg.algo.estimator_config, "gamma", 1.0))
            if s.critic_episodes:
                # the returns the first PPO batches will have (seed 1: explained variance at
                # iteration 1 0.43 vs 0.12 from the demonstrations; docs/experiments/rl-that-learns.md)
                trajs = self._play_for_critic(s.critic_episodes)
                m["critic_pretrain/episodes"] = float(len(trajs))
                m["critic_pretrain/policy_success"] = float(np.mean([t.success for t in trajs]))
                m["time/critic_rollout_s"] = time.perf_counter() - t0
                examples = episode_examples(trajs)
                returns = episode_returns(trajs, cfg.algo.shaping, gamma)
            else:  # the demonstrations: the expert always wins, the policy mostly fails
                returns = demonstration_returns(
                    examples, gamma, cfg.algo.shaping.success_reward or 1.0
                )
            m.update(
                pretrain_critic(
                    self.policy,
                    examples,
                    returns,
                    get_estimator(cfg.algo.estimator).head_positions(cfg.algo.estimator_config),
                    format=cfg.rollout.format,
                    steps=s.critic_steps,
                    lr=s.critic_lr,
                    batch_rows=s.batch_rows,
                    micro_batch_rows=s.micro_batch_rows,
                    seed=s.seed,
                    progress=lambda step, total, loss: self.progress(
                        "critic", {"step": step, "total": total, "loss": loss}
                    ),
                )
            )
            m["time/critic_pretrain_s"] = time.perf_counter() - t0
        return m

    def screen_pool(self) -> dict[str, float]:
        """With ``rollout.pool_screen`` k: the pool is the first ``rollout.task_pool`` training
        tasks, in seed order, that the current policy wins ``rollout.pool_min_wins`` times or
        more in k episodes (at the rollout temperature, as many candidates at a time as the
        environments allow), written to ``pool.json``. Without: nothing (the first N tasks)."""
        cfg = self.cfg
        r = cfg.rollout
        k = r.pool_screen
        if not k:
            return {}
        t0 = time.perf_counter()
        waves = iter(range(10**9))

        def wins_of(candidates: list[int]) -> list[int]:
            tasks = [Task(seed=sd, group_id=f"screen:{sd}") for sd in candidates for _ in range(k)]
            trajs = self._play_shards(
                tasks,
                seed=seeds.screening_seed(cfg.seed, next(waves)),
                greedy=False,
                temperature=r.temperature,
                max_turns=r.max_turns,
            )
            return [
                sum(t.success for t in trajs[j * k : (j + 1) * k]) for j in range(len(candidates))
            ]

        kept, wins = screen_tasks(
            seeds.task_seed_base(cfg.seed),
            wins_of,
            keep=r.task_pool,
            per_call=max(1, self.train_pool.n // k),
            limit=MAX_CANDIDATES_PER_TASK * r.task_pool,
            min_wins=r.pool_min_wins,
        )
        if len(kept) < r.task_pool:  # a setting the policy cannot meet: `hiper train` says so
            raise ValueError(
                f"pool screening: the policy won only {len(kept)} of the first {len(wins)} "
                f"training tasks {r.pool_min_wins}+ times in {k} episodes each, and "
                f"rollout.task_pool is {r.task_pool}; lower rollout.task_pool or "
                "rollout.pool_min_wins, or set rollout.pool_screen=0"
            )
        self.pool = kept
        record = {
            "seeds": kept,
            "pool_screen": k,
            "pool_min_wins": r.pool_min_wins,
            "wins": {str(sd): w for sd, w in wins.items()},
        }
        if self.main:
            atomic_write_text(self.run_dir / POOL_FILE, json.dumps(record, indent=1))
        return {
            "pool/candidates": float(len(wins)),
            "pool/candidate_win_rate": float(sum(wins.values()) / (k * len(wins))),
            "pool/kept_win_rate": float(sum(wins[sd] for sd in kept) / (k * len(kept))),
            "time/pool_screen_s": time.perf_counter() - t0,
        }

    def _save_sft_model(self, metrics: dict[str, float]) -> None:
        """The SFT model as a plain model folder (LoRA merged), with the SFT metrics and the RNG
        state at this moment, written aside and renamed into place."""
        out = self.run_dir / SFT_MODEL_DIR
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{SFT_MODEL_DIR}-", dir=self.run_dir))
        lm = self.policy.lm
        if self.cfg.model.lora is not None:
            lm = lm.merge_and_unload()
        lm.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        torch.save(capture_rng_state(), tmp / SFT_RNG_FILE)
        atomic_write_text(tmp / SFT_METRICS_FILE, json.dumps(metrics, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        fsync_dir(self.run_dir)

    def _start_from_sft(self) -> None:
        """Start RL from the SFT model: it is the RL policy's initial weights AND its KL
        reference; value heads start fresh, from the RNG state saved with the model."""
        out = self.run_dir / SFT_MODEL_DIR
        restore_rng_state(torch.load(out / SFT_RNG_FILE, map_location="cpu", weights_only=True))
        self.policy = self._load_fresh(out)
        self.optimizer = make_optimizer(self.policy, self.cfg.ppo)

    def _eval_tasks(self, split: str) -> tuple[EnvPool, list[str]]:
        """The environment pool and task ids of an evaluation split (made once per run)."""
        cfg = self.cfg
        if split not in self.eval_sets:
            if split == TRAINING_TASKS:
                pool = self.train_pool
                probe = make_env(cfg.env.name, **env_options(cfg, cfg.env.train_split))
                pool_seeds = training_seeds(cfg, None, self.pool)[: cfg.eval.tasks or None]
                ids = [probe.task_id_for_seed(s) for s in pool_seeds]
                probe.close()
            else:
                options = env_options(cfg, split)
                pool = EnvPool(
                    cfg.env.name, cfg.env.workers, backend=cfg.env.backend, options=options
                )
                # filtering by task type resets every manifest task: do it once per run
                manifest = cfg.env.eval_manifest if split == cfg.env.eval_split else None
                ids = manifest_task_ids(cfg.env.name, manifest or split, cfg.eval.tasks, options)
            self.eval_sets[split] = (pool, ids)
        return self.eval_sets[split]

    def evaluate(self, iteration: int, split: str | None = None) -> dict[str, float]:
        """Metrics of an evaluation on ``split`` (default ``env.eval_split``, under ``eval/``;
        any other split under ``<split>/``)."""
        cfg = self.cfg
        e = cfg.eval
        main = split is None or split == cfg.env.eval_split
        split = split or cfg.env.eval_split
        pool, ids = self._eval_tasks(split)
        opts_split = cfg.env.train_split if split == TRAINING_TASKS else split
        t0 = time.perf_counter()
        r = cfg.rollout
        report = evaluate_policy(
            self.policy,
            cfg.env.name,
            ids,
            options=env_options(cfg, opts_split),
            split=split,
            seeds=e.seeds,
            greedy=e.greedy,
            temperature=e.temperature,
            max_turns=e.max_turns or r.max_turns,
            max_new_tokens=r.max_new_tokens,
            history_len=r.history_len,
            format=r.format,
            instructions=r.instructions,
            pool=pool,
        )
        runs = report.runs
        prefix = "eval" if main else split
        m = episode_metrics([t for trajs in runs for t in trajs], prefix)
        if e.seeds > 1:
            m[f"{prefix}/success_std"] = float(
                np.std([np.mean([t.success for t in r]) for r in runs])
            )
        m[f"time/{prefix}_s"] = time.perf_counter() - t0
        if main:
            self.trajlog.append(iteration, "eval", runs[0])
        return m

    def evaluate_all(self, iteration: int, *, extra_splits: bool = True) -> dict[str, float]:
        """Rank 0's main evaluation and, with ``extra_splits``, every ``eval.extra_splits`` one
        (start and end of a run); every rank calls it, the others get {}."""
        with full_parameters(self.policy):  # sharded: rank 0 needs the whole model
            if not self.main:
                return {}
            m = self.evaluate(iteration)
            for split in self.cfg.eval.extra_splits if extra_splits else ():
                if split != self.cfg.env.eval_split:
                    m.update(self.evaluate(iteration, split))
            return m

    def train_iteration(self, it: int) -> dict[str, float]:
        cfg = self.cfg
        r = cfg.rollout
        t0 = time.perf_counter()
        trajs = self._play_shards(
            iteration_tasks(cfg, it, pool=self.pool),
            seed=seeds.rollout_seed(cfg.seed, it),
            greedy=False,
            temperature=r.temperature,
            max_turns=r.max_turns,
        )
        t1 = time.perf_counter()
        crash_point("rollout_done")
        trajs, lost = drop_lost(trajs, keep=r.keep_lost_episodes)
        if not trajs:  # every environment was lost: nothing to learn from
            return {"train/lost_episodes": float(lost), "time/rollout_s": t1 - t0}
        prep = prepare_batch(
            self.policy,
            self.aligner,
            trajs,
            cfg.algo.estimator,
            cfg.algo.estimator_config,
            cfg.algo.shaping,
            cfg.ppo.micro_batch_rows,
            temperature=r.temperature,
            recompute_old_logprobs=cfg.ppo.recompute_old_logprobs,
            dist=self.dist,
        )
        t2 = time.perf_counter()
        self.policy.train()
        if it > cfg.critic_warmup:
            upd = ppo_update(
                self.policy, self.optimizer, prep.batch, cfg.ppo, iteration=it, dist=self.dist
            )
        else:  # the critic's warm-up: the value loss alone, the policy stays the SFT model
            upd = critic_update(
                self.policy,
                self.optimizer,
                prep.batch,
                cfg.ppo,
                iteration=it,
                epochs=cfg.ppo.ppo_epochs,
                dist=self.dist,
            )
        t3 = time.perf_counter()
        gen_tokens = sum(int(t.response_ids.size) for t in prep.turns)
        m = episode_metrics(trajs, "train")
        m["train/lost_episodes"] = float(lost)
        m.update({f"ppo/{k}": float(v) for k, v in upd.items()})
        m.update({k: float(v) for k, v in prep.advantages.stats.items()})
        m["train/reward"] = float(prep.rewards[prep.layout.mask].sum() / len(trajs))
        m["train/turns"] = float(len(prep.turns))
        m["time/rollout_s"] = t1 - t0
        m["time/prepare_s"] = t2 - t1
        m["time/update_s"] = t3 - t2
        m["time/iteration_s"] = t3 - t0
        m["throughput/gen_tokens_per_s"] = gen_tokens / max(t1 - t0, 1e-9)
        # every row's prompt and response go through forward and backward once per PPO epoch
        rows = sum(int(t.prompt_ids.size + t.response_ids.size) for t in prep.turns)
        m["throughput/update_tokens_per_s"] = rows * cfg.ppo.ppo_epochs / max(t3 - t2, 1e-9)
        m["memory/peak_gb"] = peak_memory_gb(self.policy.device)
        if self.main and (it % max(cfg.logging.trajectories_every, 1)) == 0:
            self.trajlog.append(it, "train", trajs, extras=_turn_extras(prep))
        return m

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        try:
            start = self._setup()
            if start == 0:
                m = self.warm_start()
                m.update(self.evaluate_all(0))
                self._log(0, m, "eval", {"stage": "sft"})
                start = 1
                self._shard()  # the RL iterations' sharding (model.fsdp)
            last = {}
            for it in range(start, cfg.iterations + 1):
                m = self.train_iteration(it)
                if it == cfg.iterations:
                    m.update(self.evaluate_all(it))
                elif cfg.eval.every and it % cfg.eval.every == 0:
                    m.update(self.evaluate_all(it, extra_splits=False))
                due = it % cfg.checkpoint_every == 0 or it == cfg.iterations
                self._log(it, m, "iteration", {} if due else None)
                last = m
            summary = {}
            if self.main:
                summary = _summary(self.run_dir)
                atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))
            # every rank ends together: none tears the process group down while another still
            # has a collective in flight
            self.dist.barrier()
            return {"last": last, **summary}
        finally:
            self.close()

    def _log(self, it: int, m: dict[str, float], event: str, checkpoint: dict | None) -> None:
        """Rank 0: log iteration ``it``'s metrics and, when ``checkpoint`` (its extra record) is
        given, write its checkpoint (every rank calls it: a sharded model's states are gathered
        to rank 0 first, and the checkpoint is the one a single process writes)."""
        states = {}
        if checkpoint is not None and is_sharded(self.policy):
            states = {
                "policy_state": full_state_dict(self.policy),
                "optimizer_state": full_optimizer_state(self.optimizer),
            }
        if not self.main:
            return
        self.metrics.log(it, m)
        self.progress(event, {"iteration": it, **m})
        crash_point("iteration_logged")
        if checkpoint is not None:
            save_checkpoint(
                self.run_dir,
                it,
                policy=self.policy,
                optimizer=self.optimizer,
                extra=checkpoint,
                **states,
            )

    def close(self) -> None:
        pools = [getattr(self, "train_pool", None)]
        pools += [pool for pool, _ in getattr(self, "eval_sets", {}).values()]
        for pool in dict.fromkeys(p for p in pools if p is not None):
            pool.close()
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()
        if getattr(self, "lock", None) is not None:
            self.lock.release()


def _turn_extras(prep) -> list[list[dict[str, Any]]]:
    """Per trajectory, per turn: the advantages each kind of token received (for the viewer)."""
    out: list[list[dict[str, Any]]] = []
    a = prep.advantages
    lay = prep.layout
    for b in range(lay.shape[0]):
        row = []
        for t in range(int(lay.length[b])):
            row.append(
                {
                    "adv_action": float(a.action[b, t]),
                    "adv_subgoal": float(a.subgoal[b, t]) if a.subgoal_on[b, t] else None,
                    "adv_switch": float(a.switch[b, t]) if a.switch_on[b, t] else None,
                    "shaped_reward": float(prep.rewards[b, t]),
                }
            )
        out.append(row)
    return out


def _summary(run_dir: Path) -> dict[str, Any]:
    from hiper.runs.log import read_jsonl

    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = [(r["iteration"], r["eval/success"]) for r in rows if "eval/success" in r]
    out: dict[str, Any] = {"evals": evals}
    if evals:
        out["eval_success_start"] = evals[0][1]
        out["eval_success_end"] = evals[-1][1]
        out["eval_success_gain_pp"] = 100.0 * (evals[-1][1] - evals[0][1])
    # the other evaluation splits (start and end of the run)
    extra = sorted(
        {k[: -len("/success")] for r in rows for k in r if k.endswith("/success")}
        - {"eval", "train"}
    )
    for split in extra:
        pts = [(r["iteration"], r[f"{split}/success"]) for r in rows if f"{split}/success" in r]
        out[split] = {"evals": pts, "start": pts[0][1], "end": pts[-1][1]}
    return out
