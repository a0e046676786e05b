"""The ALFWorld environment: real games played through textworld + alfworld on the release files."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from hiper.envs import TextEnv, load_manifest, make_env, make_options
from hiper.envs.alfworld import (
    EVAL_SPLITS,
    TASK_TYPES,
    AlfworldDataError,
    AlfworldEnv,
    AlfworldOptions,
    build_manifest,
    ensure_alfworld_data,
    list_task_ids,
    task_type_of,
    walkthrough_phases,
)
from tests.conftest import require

TARBALL = ("alfworld", "json_2.1.1.tar.gz")
SPLIT_SIZES = {"eval_in_distribution": 140, "eval_out_of_distribution": 134}


@pytest.fixture(scope="module")
def data_root(shared_data: Path) -> Path:
    """``json_2.1.1`` with the two evaluation splits, extracted once into the user cache."""
    tarball = shared_data.joinpath(*TARBALL)
    require(tarball.is_file(), f"ALFWorld tarball {tarball} is missing")
    return ensure_alfworld_data(tarball, splits=("valid_seen", "valid_unseen"))


@pytest.fixture(scope="module")
def games() -> None:
    """Playing needs the optional textworld + alfworld packages."""
    missing = [
        m for m in ("textworld", "alfworld", "fast_downward") if not importlib.util.find_spec(m)
    ]
    require(not missing, f"the alfworld extra is not installed (missing {missing})")


@pytest.fixture(scope="module")
def ood(data_root: Path, games: None) -> AlfworldEnv:
    env = make_env("alfworld", data_dir=str(data_root), split="eval_out_of_distribution")
    yield env
    env.close()


def first_of_each_type(task_ids) -> dict[str, str]:
    found: dict[str, str] = {}
    for tid in task_ids:
        found.setdefault(task_type_of(tid), tid)
    return found


# ---------------------------------------------------------------------------------------------
# Real games


def test_walkthrough_wins_one_game_of_each_type(ood: AlfworldEnv):
    assert isinstance(ood, TextEnv) and ood.family == "household"
    per_type = first_of_each_type(ood.task_ids)
    assert sorted(per_type) == sorted(TASK_TYPES)
    for task_type, tid in per_type.items():
        result = ood.reset(task_id=tid)
        obs = result.observation
        assert obs.startswith("You are in the middle of a room"), obs
        assert "Welcome to TextWorld" not in obs
        assert obs.rstrip().endswith("Your task is to: " + result.info["task"])
        assert result.info == {
            "won": False,
            "score": 0.0,
            "task_type": task_type,
            "task_id": tid,
            "task": result.info["task"],
            "gamefile": str(ood.split_dir / tid / "game.tw-pddl"),
            "steps": 0,
            "max_steps": 50,
        }
        assert "help" not in result.admissible and "look" in result.admissible
        walkthrough = ood.walkthrough()
        assert walkthrough == ood.walkthrough(tid) and len(walkthrough) >= 2
        phase_starts = {p.start for p in walkthrough_phases(walkthrough)}
        for i, expected in enumerate(walkthrough):
            turn = ood.expert_turn()
            assert turn.action == expected
            assert turn.switch == ("SWITCH" if i in phase_starts else "KEEP")
            assert expected in result.admissible, (tid, expected)
            assert not result.done
            result = ood.step(turn.action)
            assert result.observation and result.observation != "Nothing happens."
            last = i == len(walkthrough) - 1
            assert result.reward == (1.0 if last else 0.0), (tid, i)
        assert result.terminated and not result.truncated
        assert result.info["won"] is True and result.info["score"] == 1.0
        assert result.info["steps"] == len(walkthrough)
        # stepping an ended episode is a no-op, not an error
        after = ood.step("look")
        assert after.done and after.reward == 0.0 and "reset()" in after.observation


def test_wrong_actions_get_the_games_answer(ood: AlfworldEnv):
    tid = ood.task_ids[0]
    start = ood.reset(task_id=tid)
    for action in ["", "   ", "fly to the moon", "Go To Desk 1", "☃ éè 日本語 \x00", "x" * 100_000]:
        result = ood.step(action)
        assert result.observation == "Nothing happens.", action[:20]
        assert result.reward == 0.0 and not result.done
        assert result.admissible == start.admissible
    assert ood.step(None).observation == "Nothing happens."  # type: ignore[arg-type]
    assert ood.step("help").observation.startswith("Available commands")
    assert ood.step("inventory").observation == "You are not carrying anything."
    # the expert is still on its path: the walkthrough still wins
    turn = ood.expert_turn()
    assert turn.switch == "SWITCH" and turn.action == ood.walkthrough()[0]
    result = start
    for action in ood.walkthrough():
        result = ood.step(action)
    assert (
        result.terminated
        and result.info["won"]
        and result.info["steps"] == 9 + len(ood.walkthrough())
    )


def test_fifty_steps_without_winning_truncate(ood: AlfworldEnv):
    tid = ood.task_ids[1]
    ood.reset(task_id=tid)
    for i in range(1, 50):
        result = ood.step("look" if i % 2 else "xyzzy")
        assert not result.done and "truncation" not in result.info, i
    result = ood.step("look")
    assert result.truncated and not result.terminated
    assert result.info["truncation"] == "time_limit" and result.info["won"] is False
    assert result.info["steps"] == 50 and result.reward == 0.0
    with pytest.raises(RuntimeError, match="ended"):
        ood.expert_turn()


def test_seeded_reset_and_in_distribution_split(data_root: Path, games: None):
    # data_dir may be the folder holding json_2.1.1 (as $ALFWORLD_DATA) or json_2.1.1 itself
    env = make_env("alfworld", data_dir=str(data_root.parent), split="eval_in_distribution")
    try:
        assert env.task_ids == load_manifest("alfworld", "eval_in_distribution").task_ids
        a = env.reset(seed=7)
        b = env.reset(seed=7)
        assert a.info["task_id"] == b.info["task_id"] and a.observation == b.observation
        result = env.reset(seed=8)
        assert result.info["task_id"] != a.info["task_id"]
        for action in env.walkthrough():
            assert action in result.admissible
            result = env.step(action)
        assert result.terminated and result.reward == 1.0
        with pytest.raises(ValueError, match="unknown alfworld task id"):
            env.reset(task_id="pick_and_place_simple-Nope/trial_0")
    finally:
        env.close()


def test_a_game_textworld_cannot_load_is_a_data_error(tmp_path: Path, data_root: Path, games: None):
    split = tmp_path / "json_2.1.1" / "valid_unseen"
    good_id = load_manifest("alfworld", "eval_out_of_distribution").task_ids[0]
    good = json.loads((data_root / "valid_unseen" / good_id / "game.tw-pddl").read_text())
    write_game(split / good_id / "game.tw-pddl", json.dumps(good))
    bad_id = "pick_and_place_simple-Mug-None-Shelf-1/trial_bad"
    bad = dict(good, pddl_problem="(define (problem broken")
    bad_path = write_game(split / bad_id / "game.tw-pddl", json.dumps(bad))
    env = make_env("alfworld", data_dir=str(tmp_path), split="eval_out_of_distribution")
    try:
        with pytest.raises(
            AlfworldDataError, match=rf"could not load .*{re.escape(str(bad_path))}"
        ):
            env.reset(task_id=bad_id)
        result = env.reset(task_id=good_id)  # the env recovers
        for action in env.walkthrough():
            result = env.step(action)
        assert result.terminated and result.reward == 1.0
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# Data, manifests, options


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_committed_manifests_match_the_data(data_root: Path, split: str):
    committed = load_manifest("alfworld", split)
    assert committed == build_manifest(str(data_root), split)
    assert len(committed.task_ids) == SPLIT_SIZES[split]
    assert list(committed.task_ids) == sorted(committed.task_ids)
    assert {task_type_of(t) for t in committed.task_ids} == set(TASK_TYPES)


def test_task_type_parsing():
    for task_type in TASK_TYPES:
        assert task_type_of(f"{task_type}-Mug-None-Shelf-1/trial_T2019_1") == task_type
    assert task_type_of("pick_two_obj_and_place-CD-None-Safe-308") == "pick_two_obj_and_place"
    for bad in ("pick_and_place-Mug-None-Shelf-1/trial_1", "nonsense", ""):
        with pytest.raises(AlfworldDataError, match="task type"):
            task_type_of(bad)


def test_walkthrough_phases_and_subgoals():
    two = [
        "go to desk 1",
        "take creditcard 3 from desk 1",
        "go to safe 1",
        "open safe 1",
        "move creditcard 3 to safe 1",
        "go to desk 1",
        "take creditcard 2 from desk 1",
        "go to safe 1",
        "move creditcard 2 to safe 1",
    ]
    phases = walkthrough_phases(two)
    assert [(p.subgoal, p.start, len(p.actions)) for p in phases] == [
        ("find and take the creditcard", 0, 2),
        ("put the creditcard in the safe", 2, 3),
        ("find and take another creditcard", 5, 2),
        ("put the creditcard in the safe", 7, 2),
    ]
    clean = ["go to countertop 2", "take mug 1 from countertop 2", "go to sinkbasin 1"]
    clean += ["clean mug 1 with sinkbasin 1", "go to shelf 1", "move mug 1 to shelf 1"]
    assert [p.subgoal for p in walkthrough_phases(clean)] == [
        "find and take the mug",
        "clean the mug",
        "put the mug on the shelf",
    ]
    look = ["go to desk 1", "use desklamp 1", "take alarmclock 2 from desk 1"]
    assert [p.subgoal for p in walkthrough_phases(look)] == [
        "find and use the desklamp",
        "find and take the alarmclock",
    ]
    heat_cool = ["go to fridge 1", "heat apple 1 with microwave 1", "cool apple 1 with fridge 1"]
    assert [p.subgoal for p in walkthrough_phases(heat_cool)] == [
        "heat the apple",
        "cool the apple",
    ]
    assert [p.subgoal for p in walkthrough_phases(["go to desk 1", "look"])] == [
        "complete the task"
    ]
    tail = walkthrough_phases(["take pen 1 from desk 1", "look"])
    assert len(tail) == 1 and tail[0].actions == ("take pen 1 from desk 1", "look")


def test_options_are_validated():
    assert make_options("alfworld") == AlfworldOptions(None, "train", 50)
    with pytest.raises(ValueError, match="split must be one of"):
        AlfworldOptions(split="valid_seen")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        AlfworldOptions(max_steps=0)
    with pytest.raises(TypeError, match="max_steps"):
        AlfworldOptions(max_steps=True)
    with pytest.raises(TypeError, match="data_dir"):
        AlfworldOptions(data_dir=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown option"):
        make_options("alfworld", max_step=10)
    assert AlfworldOptions(data_dir=Path("/x")).data_dir == "/x"


def write_game(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_missing_and_malformed_data_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(AlfworldDataError, match=r"ALFWORLD_DATA"):
        make_env("alfworld")
    missing = tmp_path / "nowhere"
    with pytest.raises(AlfworldDataError, match=rf"{re.escape(str(missing))}.*does not exist"):
        make_env("alfworld", data_dir=str(missing))
    monkeypatch.setenv("ALFWORLD_DATA", str(missing))
    with pytest.raises(AlfworldDataError, match=rf"{re.escape(str(missing))}.*does not exist"):
        make_env("alfworld")

    root = tmp_path / "data" / "json_2.1.1"
    root.mkdir(parents=True)
    with pytest.raises(AlfworldDataError, match=r"valid_unseen does not exist"):
        make_env("alfworld", data_dir=str(root.parent), split="eval_out_of_distribution")
    (root / "valid_unseen" / "pick_and_place_simple-Mug-None-Shelf-1" / "trial_1").mkdir(
        parents=True
    )
    with pytest.raises(AlfworldDataError, match=r"no ALFWorld games under .*valid_unseen"):
        make_env("alfworld", data_dir=str(root), split="eval_out_of_distribution")

    trial = root / "valid_unseen" / "pick_and_place_simple-Mug-None-Shelf-1"
    broken = write_game(trial / "trial_1" / "game.tw-pddl", '{"pddl_domain": "(define')
    nokeys = write_game(trial / "trial_2" / "game.tw-pddl", json.dumps({"pddl_domain": "x"}))
    badtype = write_game(
        root / "valid_unseen" / "mystery-A-B-C-1" / "trial_3" / "game.tw-pddl", "{}"
    )
    env = make_env("alfworld", data_dir=str(root), split="eval_out_of_distribution")
    assert env.task_ids == (
        "mystery-A-B-C-1/trial_3",
        "pick_and_place_simple-Mug-None-Shelf-1/trial_1",
        "pick_and_place_simple-Mug-None-Shelf-1/trial_2",
    )
    with pytest.raises(AlfworldDataError, match=rf"{re.escape(str(broken))}.*not valid JSON"):
        env.reset(task_id="pick_and_place_simple-Mug-None-Shelf-1/trial_1")
    with pytest.raises(AlfworldDataError, match=rf"{re.escape(str(nokeys))}.*lacks key.*grammar"):
        env.reset(task_id="pick_and_place_simple-Mug-None-Shelf-1/trial_2")
    with pytest.raises(AlfworldDataError, match=rf"{re.escape(str(badtype))}.*lacks key"):
        env.walkthrough("mystery-A-B-C-1/trial_3")
    file_path = write_game(tmp_path / "file.txt", "x")
    with pytest.raises(AlfworldDataError, match="not a directory"):
        make_env("alfworld", data_dir=str(file_path))


def make_tarball(path: Path, splits: dict[str, list[str]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split, ids in splits.items():
            for tid in ids:
                data = json.dumps({"walkthrough": [tid]}).encode()
                info = tarfile.TarInfo(f"json_2.1.1/{split}/{tid}/game.tw-pddl")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("json_2.1.1/valid_seen/../../escape.txt")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    return path


def test_ensure_alfworld_data_extracts_requested_splits_once(tmp_path: Path):
    ids = {
        "train": ["pick_and_place_simple-A-None-B-1/trial_1"],
        "valid_seen": [
            "look_at_obj_in_light-A-None-B-2/trial_1",
            "pick_two_obj_and_place-A-None-B-2/t",
        ],
        "valid_unseen": ["pick_cool_then_place_in_recep-A-None-B-3/trial_9"],
    }
    tarball = make_tarball(tmp_path / "json_2.1.1.tar.gz", ids)
    cache = tmp_path / "cache"
    root = ensure_alfworld_data(tarball, cache, splits=("eval_in_distribution",))
    assert root == cache / "json_2.1.1"
    assert sorted(p.name for p in root.iterdir()) == ["valid_seen"]
    assert list_task_ids(root / "valid_seen") == tuple(ids["valid_seen"])
    assert sorted(p.name for p in cache.iterdir()) == ["json_2.1.1"]  # no temp folder left
    assert not (tmp_path / "escape.txt").exists()
    # cached: the tarball is not read again
    tarball.rename(tmp_path / "moved.tar.gz")
    assert ensure_alfworld_data(tarball, cache, splits=("valid_seen",)) == root
    with pytest.raises(AlfworldDataError, match=rf"{re.escape(str(tarball))} does not exist"):
        ensure_alfworld_data(tarball, cache, splits=("valid_seen", "valid_unseen"))
    tarball = (tmp_path / "moved.tar.gz").rename(tarball)
    ensure_alfworld_data(tarball, cache, splits=("train", "valid_unseen"))
    assert sorted(p.name for p in root.iterdir()) == ["train", "valid_seen", "valid_unseen"]
    with pytest.raises(AlfworldDataError, match=r"no json_2\.1\.1/valid_train/"):
        ensure_alfworld_data(tarball, cache, splits=("valid_train",))
    with pytest.raises(ValueError, match="unknown ALFWorld split"):
        ensure_alfworld_data(tarball, cache, splits=("test",))


def test_a_tarball_is_accepted_as_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ids = {"valid_unseen": ["pick_cool_then_place_in_recep-A-None-B-3/trial_9"]}
    tarball = make_tarball(tmp_path / "json_2.1.1.tar.gz", ids)
    monkeypatch.setenv("HIPER_CACHE", str(tmp_path / "hc"))
    env = AlfworldEnv(AlfworldOptions(data_dir=str(tarball), split="eval_out_of_distribution"))
    assert env.split_dir == tmp_path / "hc" / "alfworld" / "json_2.1.1" / "valid_unseen"
    assert env.task_ids == tuple(ids["valid_unseen"])
