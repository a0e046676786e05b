"""The typed configuration of a training run (``hiper train CONFIG [key=value ...]``).

Every field is documented here; the YAML presets (``hiper/presets/``, a checkout's ``configs/``;
``hiper presets`` lists them) set what differs from these defaults.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hiper.algos.base import get_estimator
from hiper.algos.shaping import ShapingConfig
from hiper.config import ConfigError, apply_overrides, from_dict
from hiper.models.policy import LoraSettings, check_device_name
from hiper.rollout import RolloutConfig
from hiper.train.ppo import PPOConfig

#: The evaluation "split" that replays the training pool's tasks with fresh sampling seeds.
TRAINING_TASKS = "training_tasks"


@dataclass(frozen=True)
class TinyModelConfig:
    """Built on the fly when ``model.path`` is null: a tokenizer fitted to household expert demos
    and a small Qwen2 model, saved under ``<run_dir>/base_model`` with ``save_pretrained``."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    corpus_episodes: int = 200


@dataclass(frozen=True)
class ModelConfig:
    # local Hugging Face model folder, or a named model (`hiper models list`, prepared once into
    # the cache; docs/models.md); null: build the tiny model
    path: str | None = None
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraSettings | None = None
    critic: Literal["shared", "separate"] = "shared"  # paper: shared; original code: separate
    critic_path: str | None = None  # separate critic's base model (default: path)
    # what the value heads read: "last" (hidden state at the position) or "prefix_mean" (mean of
    # the hidden states over the prefix; see hiper.models.policy.VALUE_READOUTS)
    value_readout: Literal["last", "prefix_mean"] = "last"
    # the value heads' outputs are multiplied by this: they learn returns in its units (use the
    # success reward's size; see hiper.models.policy.load_policy)
    value_scale: float = 1.0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    # recompute activations in the backward pass (PolicyModel.checkpoint_activations): the
    # memory of long prompts on a GPU, for about one more forward per update
    activation_checkpointing: bool = False
    # under torchrun: shard the policy (and a separate critic) between the processes with FSDP2
    # for the RL iterations (hiper.train.distributed.shard_model); one process: no effect
    fsdp: bool = False
    # with fsdp: compute in bfloat16, keep float32 weights, optimizer states and gradient sums
    # (FSDP2's MixedPrecisionPolicy); the value heads stay float32
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        check_device_name(self.device)  # its spelling; whether it exists is checked at training
        if self.mixed_precision and not self.fsdp:
            raise ConfigError(
                "model.mixed_precision is FSDP2's bfloat16 compute: it needs model.fsdp: true"
            )
        if self.mixed_precision and self.dtype != "float32":
            raise ConfigError(
                f"model.mixed_precision keeps float32 weights and computes in bfloat16, but "
                f"model.dtype is {self.dtype}: set model.dtype: float32"
            )


@dataclass(frozen=True)
class EnvConfig:
    name: str = "household"
    options: dict[str, Any] = field(default_factory=dict)  # the environment's typed options
    train_split: str = "train"
    eval_split: str = "eval_out_of_distribution"  # evaluated on its fixed task manifest
    eval_manifest: str | None = None  # manifest name when it differs from eval_split
    backend: Literal["inprocess", "subprocess", "ray"] = "inprocess"
    workers: int = 16  # environments stepped together (one generation batch)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class RolloutSection(RolloutConfig):
    """The ``rollout`` section: how episodes are played (:class:`~hiper.rollout.RolloutConfig`:
    ``max_turns``, ``history_len``, ``format``, ``instructions``) and which tasks a training
    iteration plays, how many times, sampled how."""

    tasks_per_iteration: int = 16  # distinct tasks per iteration
    group_size: int = 1  # rollouts per task (GRPO/RLOO/GiGPO need > 1)
    # null: every iteration plays new training tasks; N: a fixed pool of N training tasks, played
    # in turn (iteration i plays pool tasks i*k .. i*k+k-1 mod N, k = tasks_per_iteration)
    task_pool: int | None = None
    # with task_pool N, k > 0: the pool is the first N training tasks (in seed order) that the
    # starting (SFT) policy wins at least pool_min_wins times in k episodes; a task it never wins
    # gives every estimator zero advantage (the pass-rate filter of DAPO's dynamic sampling,
    # applied once)
    pool_screen: int = 0
    pool_min_wins: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    # an episode cut short because its environment worker died (truncation "worker_lost") says
    # nothing about the policy: it is left out of the update (counted in train/lost_episodes)
    # unless this is true, when it enters as the truncated episode it is
    keep_lost_episodes: bool = False
    # every rollout (an iteration's, the pool screening's, value pre-training's) is played as this
    # many independent pieces, each a contiguous share of its episodes with its own sampling seed;
    # with N processes (torchrun) each plays shards/N of them. A run's results depend on shards,
    # never on the number of processes, so it can resume under another one (docs/distributed.md)
    shards: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()  # max_turns, history_len, format
        for name in ("tasks_per_iteration", "group_size", "max_new_tokens", "shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.task_pool is not None and (
            isinstance(self.task_pool, bool)
            or not isinstance(self.task_pool, int)
            or self.task_pool < 1
        ):
            raise ValueError(
                f"task_pool must be null or a positive integer, got {self.task_pool!r}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        k = self.pool_screen
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"pool_screen must be an integer >= 0, got {k!r}")
        w = self.pool_min_wins
        if isinstance(w, bool) or not isinstance(w, int) or w < 1 or (k and w > k):
            raise ValueError(
                f"pool_min_wins must be an integer in 1..pool_screen ({k}), got {w!r}"
                if k
                else f"pool_min_wins must be an integer >= 1, got {w!r}"
            )
        if k and self.task_pool is None:
            raise ValueError(
                "pool_screen screens the tasks of a fixed pool: set task_pool too (or pool_screen=0)"
            )


@dataclass(frozen=True)
class SFTConfig:
    episodes: int = 0  # expert episodes for the warm start; 0 skips SFT
    noise: float = 0.0  # probability of executing a random action (the target stays the expert's)
    epochs: int = 1
    batch_rows: int = 32  # examples per optimiser step
    micro_batch_rows: int | None = 8
    lr: float = 1e-3  # peak; linear warm-up, then cosine decay to lr / 10 at the last step
    warmup_steps: int = 0
    seed: int = 1000  # episode seeds seed .. seed + episodes - 1 (disjoint from RL task seeds)
    # steps between mid-SFT checkpoints (<run_dir>/sft; `hiper train --resume` continues an
    # interrupted SFT from the last one); 0: none
    checkpoint_every: int = 50
    # value pre-training after SFT: steps of regression of every value head on known returns
    # (hiper.train.critic_pretrain); 0 skips it. Its data: the Monte-Carlo returns of
    # critic_episodes episodes the SFT policy plays on the training tasks or, with 0, the
    # demonstrations' (whose expert always wins while the policy mostly fails)
    critic_steps: int = 0
    critic_lr: float = 1e-3
    critic_episodes: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")
        for name in ("episodes", "epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")
        if self.critic_episodes < 0:
            raise ValueError(f"sft.critic_episodes must be >= 0, got {self.critic_episodes}")
        if self.checkpoint_every < 0:
            raise ValueError(f"sft.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.critic_steps < 0 or self.critic_lr <= 0:
            raise ValueError(
                f"sft.critic_steps must be >= 0 and sft.critic_lr > 0, got {self.critic_steps}, "
                f"{self.critic_lr}"
            )
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(
                f"sft.lr must be > 0 and sft.warmup_steps >= 0, got {self.lr}, {self.warmup_steps}"
            )


@dataclass(frozen=True)
class AlgoConfig:
    estimator: str = "hae"  # any registered estimator: hae gae grpo rloo reinforce_pp gigpo
    config: dict[str, Any] = field(default_factory=dict)  # the estimator's own config fields
    shaping: ShapingConfig = field(default_factory=ShapingConfig)

    def __post_init__(self) -> None:
        try:
            spec = get_estimator(self.estimator)
        except ValueError as e:
            raise ConfigError(f"algo.estimator: {e}") from None
        from_dict(spec.config, self.config, "algo.config")

    @property
    def estimator_config(self) -> Any:
        return from_dict(get_estimator(self.estimator).config, self.config, "algo.config")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 5  # iterations between evaluations (0: only at start and end)
    tasks: int | None = None  # first N tasks of the manifest; null: all
    greedy: bool = True  # false: sample at ``temperature``
    temperature: float = 0.4
    seeds: int = 1  # sampling seeds (mean +- std over them)
    max_turns: int | None = None  # default: rollout.max_turns
    # also evaluated at the start and the end (metrics ``<split>/success``): manifests of other
    # splits, or ``training_tasks`` (the rollout.task_pool tasks, with fresh sampling seeds)
    extra_splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # checked when the config is loaded, not when the first evaluation starts (after SFT)
        if self.every < 0:
            raise ValueError(
                f"every must be >= 0 (iterations between evaluations; 0: only at the start "
                f"and the end), got {self.every}"
            )
        if self.tasks is not None and self.tasks < 1:  # 0 or -2 used to mean all, all but 2
            raise ValueError(
                f"tasks must be a positive integer (the first N tasks) or null (all), "
                f"got {self.tasks}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(
                f"max_turns must be >= 1 or null (rollout.max_turns), got {self.max_turns}"
            )


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = True
    wandb: dict[str, Any] | None = None  # e.g. {project: hiper}; needs the wandb package
    trajectories_every: int = 1  # write the trajectory log every N iterations

    def __post_init__(self) -> None:
        if self.trajectories_every < 1:
            raise ValueError(
                f"trajectories_every must be >= 1 (1: every iteration), got "
                f"{self.trajectories_every}"
            )


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = "runs/quickstart"
    seed: int = 0
    iterations: int = 20
    # the first N PPO iterations update only the critic (the policy stays the SFT model), so the
    # actor's first advantages come from a critic that has seen the policy's returns
    critic_warmup: int = 0
    checkpoint_every: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    sft: SFTConfig = field(default_factory=SFTConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        if self.rollout.top_p != 1.0:
            # nucleus sampling renormalises over a per-step token set the trainer cannot
            # reproduce from logits alone: its ratios and KL would belong to another policy
            raise ConfigError(
                f"rollout.top_p: must be 1.0 for training, got {self.rollout.top_p} (PPO needs "
                "the log-probs of the distribution that sampled; lower rollout.temperature "
                "instead)"
            )
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.critic_warmup < 0:
            raise ValueError(f"critic_warmup must be >= 0, got {self.critic_warmup}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        spec = get_estimator(self.algo.estimator)
        if spec.groups and self.rollout.group_size < 2:
            # a group of one is its own baseline: every advantage would be 0 and nothing learns
            raise ConfigError(
                f"rollout.group_size: must be >= 2 for algo.estimator={spec.name} (it compares "
                f"the rollouts of a task with each other), got {self.rollout.group_size}"
            )
        wants_pool = TRAINING_TASKS in (self.env.eval_split, *self.eval.extra_splits)
        if wants_pool and self.rollout.task_pool is None:
            raise ConfigError(
                f"evaluating on {TRAINING_TASKS!r} needs a fixed pool of training tasks: set "
                "rollout.task_pool"
            )


def load_train_config(
    path: str | None,
    overrides: list[str] | tuple[str, ...] = (),
    note: Callable[[str], None] | None = None,
) -> TrainConfig:
    """A preset (a YAML path, or a shipped preset's name such as ``quickstart``; the defaults
    when ``path`` is None) with its ``extends`` chain resolved and dotted overrides applied.

    When the overrides switch ``algo.estimator``, the preset's ``algo.config`` fields that the new
    estimator does not have are dropped, and ``note`` (default: a line on stderr) names them;
    fields set by the overrides themselves are kept (and refused if they do not fit)."""
    from hiper.train.presets import load_preset

    preset = load_preset(path) if path else {}
    data = apply_overrides(preset, list(overrides))  # a copy
    notes: list[str] = []
    data = _drop_foreign_estimator_fields(data, preset, overrides, notes.append)
    cfg = from_dict(TrainConfig, data)
    for line in notes:  # once the config is valid: an error stays the only line
        (note or _stderr)(line)
    return cfg


def _drop_foreign_estimator_fields(
    data: dict[str, Any],
    preset: dict[str, Any],
    overrides: list[str] | tuple[str, ...],
    note: Callable[[str], None],
) -> dict[str, Any]:
    """``data`` without the preset's ``algo.config`` fields that an overridden
    ``algo.estimator`` does not have (see :func:`load_train_config`)."""
    from hiper.algos import ESTIMATORS

    get_estimator("hae")  # the built-ins registered
    algo = data.get("algo")
    if not isinstance(algo, dict) or not isinstance(algo.get("config"), dict):
        return data
    estimator = algo.get("estimator", AlgoConfig.estimator)
    preset_algo = preset.get("algo") if isinstance(preset.get("algo"), dict) else {}
    if estimator == preset_algo.get("estimator", AlgoConfig.estimator):
        return data
    spec = ESTIMATORS.get(estimator) if isinstance(estimator, str) else None
    if spec is None:
        return data  # AlgoConfig names the unknown estimator
    explicit = apply_overrides({}, list(overrides)).get("algo")
    explicit_config = explicit.get("config") if isinstance(explicit, dict) else None
    given = set(explicit_config) if isinstance(explicit_config, dict) else set()
    valid = {f.name for f in dataclasses.fields(spec.config) if f.init}
    dropped = [k for k in algo["config"] if k not in valid and k not in given]
    if not dropped:
        return data
    keys = ", ".join(f"algo.config.{k}" for k in dropped)
    note(
        f"note: algo.estimator={estimator} (the preset's is "
        f"{preset_algo.get('estimator', AlgoConfig.estimator)}): dropped {keys} from the preset "
        f"(not fields of {estimator}'s config)"
    )
    config = {k: v for k, v in algo["config"].items() if k not in dropped}
    return {**data, "algo": {**algo, "config": config}}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
