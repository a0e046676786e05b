"""Every bad input ends in one line on stderr that names what was wrong and what was expected,
exit code 2 and no traceback (issue 19). Each case fails in validation, before a model is built,
loaded or trained; ``hiper --debug`` re-raises, and an unexpected error keeps its traceback."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hiper.cli import app
from hiper.config import ConfigError
from hiper.train.config import load_train_config
from tests.conftest import PROJECT_ROOT
from tests.helpers import run_hiper

QUICKSTART = str(PROJECT_ROOT / "configs" / "quickstart.yaml")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model folder, copies of it without weights or without tokenizer files, an existing
    file, a non-UTF-8 and a binary YAML file, a folder that does not exist, a run folder."""
    from hiper.demos import household_corpus
    from hiper.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("cli_errors")
    model = build_tiny_model(
        root / "model",
        household_corpus(n_episodes=4, seed=0),
        vocab_size=300,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        seed=0,
    )
    (root / "no_weights").mkdir()
    shutil.copy(model / "config.json", root / "no_weights")
    (root / "no_tokenizer").mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(model / name, root / "no_tokenizer")
    (root / "file.txt").write_text("not a folder\n")
    (root / "latin1.yaml").write_bytes("iterations: 3  # dur\xe9e\n".encode("latin-1"))
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    (root / "eval").mkdir()
    (root / "eval" / "trajectories.jsonl").write_text("")  # a (viewable) empty evaluation
    return {
        "model": model,
        "no_weights": root / "no_weights",
        "no_tokenizer": root / "no_tokenizer",
        "file": root / "file.txt",
        "latin1": root / "latin1.yaml",
        "binary": root / "binary.yaml",
        "missing": root / "missing",
        "run": root / "run",
        "eval": root / "eval",
    }


def fill(text: str, folders: dict[str, Path]) -> str:
    """``{model}`` etc. in ``text`` replaced by the fixture's paths."""
    for name, path in folders.items():
        text = text.replace(f"{{{name}}}", str(path))
    return text


def one_error_line(output: str) -> str:
    """The output's error: exactly one line starting with ``error:``, and no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


EVAL = ["eval", "--model", "{model}"]
TRAIN = ["train", QUICKSTART, "run_dir={run}"]
GROUP = ["algo.config={}", "rollout.group_size=1"]  # the quickstart's config is HAE's

#: (argv, environment, the expected words of the one line)
CASES = [
    # hiper eval: every option is checked before the model is loaded
    ([*EVAL, "--seeds", "0"], {}, "--seeds: must be >= 1, got 0"),
    ([*EVAL, "--seeds", "-1"], {}, "--seeds: must be >= 1, got -1"),
    ([*EVAL, "--temperature", "0"], {}, "--temperature: must be > 0, got 0.0"),
    ([*EVAL, "--temperature", "-0.5"], {}, "--temperature: must be > 0, got -0.5"),
    ([*EVAL, "--max-turns", "-1"], {}, "--max-turns: must be >= 1, got -1"),
    ([*EVAL, "--tasks", "0"], {}, "--tasks: must be >= 1, got 0"),
    ([*EVAL, "--history-len", "-1"], {}, "--history-len: must be >= 0, got -1"),
    ([*EVAL, "--out", "{file}"], {}, "file.txt' is a file; expected a folder"),
    (
        [*EVAL, "--env", "alfworld", "--split", "eval_out_of_distribution"],
        {"ALFWORLD_DATA": "{missing}"},
        "ALFWorld data directory {missing} does not exist (expected a folder holding json_2.1.1",
    ),
    (
        [*EVAL, "--env", "alfworld", "--split", "eval_in_distribution"],
        {"ALFWORLD_DATA": ""},
        "no ALFWorld data: pass data_dir=... or set $ALFWORLD_DATA",
    ),
    (
        [*EVAL, "--env", "webshop", "--split", "eval", "--option", "data_dir={missing}"],
        {},
        "WebShop data directory {missing} does not exist or is not a folder",
    ),
    ([*EVAL, "--dtype", "fp8"], {}, "--dtype: unknown dtype 'fp8'; expected one of float32, bf"),
    ([*EVAL, "--device", "tpu9"], {}, "--device: device must be a torch device such as cpu, cuda"),
    ([*EVAL, "--device", "cuda:99"], {}, "--device: 'cuda:99'"),  # not available / no such one
    (["eval", "--model", "{missing}"], {}, "model path '{missing}' does not exist"),
    (["eval", "--model", "{no_tokenizer}"], {}, "no_tokenizer has no tokenizer files"),
    # hiper train: the model folder, the device, the config file
    ([*TRAIN, "model.path={no_weights}"], {}, "model folder {no_weights} has no weights"),
    (
        [*TRAIN, "model.path={no_tokenizer}"],
        {},
        "model folder {no_tokenizer} has no tokenizer files (expected tokenizer.json",
    ),
    ([*TRAIN, "model.device=tpu9"], {}, "model.device: must be a torch device such as cpu"),
    (["train", "{latin1}"], {}, "latin1.yaml' is not UTF-8 text (byte 20); expected a YAML"),
    (["train", "{binary}"], {}, "binary.yaml' is not UTF-8 text (byte 128); expected a YAML"),
    (["train", "{missing}"], {}, "config file '{missing}' does not exist"),
    (["train", "{eval}"], {}, "config file '{eval}' is not a file (expected a YAML file)"),
    # configuration that used to be accepted silently, refused when it is loaded
    ([*TRAIN, "algo.estimator=grpo", *GROUP], {}, "rollout.group_size: must be >= 2 for algo"),
    ([*TRAIN, "algo.estimator=rloo", *GROUP], {}, "rollout.group_size: must be >= 2 for algo"),
    ([*TRAIN, "algo.estimator=gigpo", *GROUP], {}, "rollout.group_size: must be >= 2 for algo"),
    ([*TRAIN, "eval.tasks=0"], {}, "eval.tasks: must be a positive integer"),
    (
        [*TRAIN, "rollout.grup_size=2"],
        {},
        "unknown key rollout.grup_size; did you mean rollout.group_size?",
    ),
    (["train", "quickstrat"], {}, "is not a preset name; did you mean quickstart?"),
    ([*TRAIN, "eval.tasks=-2"], {}, "eval.tasks: must be a positive integer"),
    ([*TRAIN, "eval.every=-1"], {}, "eval.every: must be >= 0"),
    ([*TRAIN, "eval.temperature=0"], {}, "eval.temperature: must be > 0, got 0.0"),
    ([*TRAIN, "eval.seeds=0"], {}, "eval.seeds: must be >= 1, got 0"),
    ([*TRAIN, "logging.trajectories_every=-1"], {}, "logging.trajectories_every: must be >= 1"),
    ([*TRAIN, "rollout.top_p=0.9"], {}, "rollout.top_p: must be 1.0 for training, got 0.9"),
    ([*TRAIN, "rollout.history_len=-1"], {}, "rollout.history_len: must be >= 0, got -1"),
    (
        ["sft", QUICKSTART, "run_dir={run}", "eval.tasks=0"],
        {},
        "eval.tasks: must be a positive integer",
    ),
    # hiper view, models, and click's own usage errors: one line too
    (["view", "{missing}"], {}, "no such run"),
    (["models", "prepare", "nope"], {}, "unknown model name 'nope'; named models:"),
    (
        [*EVAL, "--seeds", "many"],
        {},
        "Invalid value for '--seeds': Input should be a valid integer",
    ),
    (["nosuchcommand"], {}, "No such command 'nosuchcommand'"),
    (["--bogus"], {}, "No such option: --bogus"),
]


@pytest.mark.parametrize(("argv", "env", "expected"), CASES)
def test_bad_input_is_one_line_and_exit_code_2(argv, env, expected, folders):
    env = {k: fill(v, folders) for k, v in env.items()}
    result = CliRunner().invoke(app, [fill(a, folders) for a in argv], env=env)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert fill(expected, folders) in line, line
    assert result.stderr.strip() == line  # the line is on stderr, and alone there
    assert not folders["run"].exists()  # refused before the run folder was made


def test_cuda_on_a_machine_without_it(folders):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(app, [fill(a, folders) for a in [*TRAIN, "model.device=cuda"]])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line == "error: model.device: 'cuda' is not available on this machine; use cpu"
    assert not folders["run"].exists()
    result = CliRunner().invoke(app, [fill(a, folders) for a in [*EVAL, "--device", "cuda"]])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line == "error: --device: 'cuda' is not available on this machine; use cpu"


def test_view_serve_on_a_busy_port_in_a_real_process(folders):
    """The real ``hiper`` process: its stderr is the one line, its exit code 2."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["view", str(folders["eval"]), "--serve", "--port", str(port)]
        proc = run_hiper(argv, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: cannot serve on 127.0.0.1:{port}: Address already in use; choose another port "
        "(0: any free port) or host"
    ]


def test_debug_reraises_with_the_traceback(folders):
    result = CliRunner().invoke(app, ["--debug", "eval", "--model", str(folders["missing"])])
    assert isinstance(result.exception, FileNotFoundError)
    assert "error:" not in result.output


def test_an_unexpected_error_is_not_turned_into_a_line(folders, monkeypatch):
    """Only user errors become one line: anything else is a bug and keeps its traceback."""

    def broken(model):
        raise RuntimeError("internal bug")

    monkeypatch.setattr("hiper.cli._run_config", broken)
    result = CliRunner().invoke(app, ["eval", "--model", str(folders["model"])])
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    assert "error:" not in result.output


# ---------------------------------------------------------------------------------------------
# The config refuses each bad value when it is loaded, naming the dotted key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo.estimator=grpo", *GROUP], "rollout.group_size: must be >= 2 for algo.estimator"),
        (["algo.estimator=rloo", *GROUP], "rollout.group_size: must be >= 2 for algo.estimator"),
        (["algo.estimator=gigpo", *GROUP], "rollout.group_size: must be >= 2 for algo.estimator"),
        (["eval.tasks=0"], "eval.tasks: must be a positive integer (the first N tasks) or null"),
        (["eval.tasks=-2"], "eval.tasks: must be a positive integer (the first N tasks) or null"),
        (["eval.every=-1"], "eval.every: must be >= 0 (iterations between evaluations; 0: only"),
        (["eval.temperature=-1"], "eval.temperature: must be > 0, got -1.0"),
        (["eval.seeds=0"], "eval.seeds: must be >= 1, got 0"),
        (["eval.max_turns=0"], "eval.max_turns: must be >= 1 or null (rollout.max_turns), got 0"),
        (["logging.trajectories_every=-1"], "logging.trajectories_every: must be >= 1"),
        (["logging.trajectories_every=0"], "logging.trajectories_every: must be >= 1"),
        (["rollout.top_p=0.5"], "rollout.top_p: must be 1.0 for training, got 0.5"),
        (["rollout.history_len=-1"], "rollout.history_len: must be >= 0, got -1"),
        (["rollout.group_size=0"], "rollout.group_size: must be >= 1, got 0"),
        (["model.device=tpu9"], "model.device: must be a torch device such as cpu, cuda"),
        (["sft.epochs=-1"], "sft.epochs: must be >= 0, got -1"),
        (["sft.batch_rows=0"], "sft.batch_rows: must be >= 1, got 0"),
        (["iterations=-1"], "iterations: must be >= 0, got -1"),
    ],
)
def test_config_refuses_bad_values_naming_the_dotted_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_train_config(QUICKSTART, overrides)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["eval.tasks=null", "eval.every=0", "logging.trajectories_every=1"],
        ["algo.estimator=grpo", "algo.config={}", "rollout.group_size=2"],
        ["algo.estimator=reinforce_pp", "algo.config={}", "rollout.group_size=1"],
        ["model.device=cuda:1"],  # spelled right: whether it exists is checked at training
    ],
)
def test_config_accepts_the_edges(overrides):
    load_train_config(QUICKSTART, overrides)
