"""Run files: trajectory records, atomic writes, JSONL logs, metrics, trajectory logs and
checkpoints (crash safety and exact resume)."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from hiper.protocol import parse
from hiper.runs import log as runlog
from hiper.runs.log import (
    JsonlLog,
    MetricsLogger,
    TrajectoryLog,
    atomic_write_bytes,
    atomic_write_text,
    read_jsonl,
    read_trajectories,
)
from hiper.runs.records import (
    dumps_json,
    to_jsonable,
    trajectory_from_dict,
    trajectory_to_dict,
)
from hiper.types import Decision, Trajectory, Turn

torch = pytest.importorskip("torch")

from hiper.runs import checkpoints as ckpt_mod  # noqa: E402
from hiper.runs.checkpoints import (  # noqa: E402
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    restore_state,
    save_checkpoint,
)

# ---------------------------------------------------------------------------------------------
# helpers

NASTY = "héllo wörld ✓ 日本語 🤖 </script><script>alert('x')</script> \"q\" \\ \n\t\r\x00\x1f \u2028\u2029"


def nasty_trajectory(task_id: str = "task-1", n: int = 3) -> Trajectory:
    turns = []
    for t in range(n):
        text = (
            f"<switch>{'SWITCH' if t == 0 else 'KEEP'}</switch>\n<subgoal>{NASTY}</subgoal>\n"
            f"<action>go to desk {t}</action>"
        )
        turns.append(
            Turn(
                observation=f"obs {t}: {NASTY} lone surrogate \ud800 end",
                response_text=text,
                decision=parse(text),
                reward=[0.0, math.nan, -math.inf][t % 3],
                terminated=t == n - 1,
                prompt_ids=np.arange(5 + t, dtype=np.int64),
                response_ids=np.array([3, 1, 4, 1, 5][: t + 2], dtype=np.int32),
                logprobs=np.array(
                    [-0.1, np.float32(-1e-8), math.nan, -math.inf, 1 / 3][: t + 2],
                    dtype=np.float32,
                ),
                switch_prob=[None, math.nan, 0.123456789][t % 3],
                subgoal=NASTY if t else None,
                token_spans={"switch": (0, 3), "action": (7, 12)} if t != 1 else None,
                admissible=("go to desk 1", NASTY),
                info={"won": bool(t == n - 1), "note": NASTY, "nested": {"a": [1, 2.5, None]}},
            )
        )
    return Trajectory(
        task_id=task_id,
        turns=turns,
        task_type="pick_and_place",
        group_id="g<1>",
        success=True,
        score=0.75,
        info={"seed": 7, "text": NASTY},
    )


def assert_same_array(a, b) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    assert isinstance(b, np.ndarray)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # bit-identical, NaN included


def same_float(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_same_trajectory(a: Trajectory, b: Trajectory, *, tokens: bool = True) -> None:
    for f in ("task_id", "task_type", "group_id", "success", "info"):
        assert getattr(a, f) == getattr(b, f), f
    assert same_float(a.score, b.score)
    assert len(a.turns) == len(b.turns)
    for x, y in zip(a.turns, b.turns, strict=True):
        for f in ("observation", "response_text", "decision", "terminated", "truncated"):
            assert getattr(x, f) == getattr(y, f), f
        for f in ("subgoal", "token_spans", "admissible", "info"):
            assert getattr(x, f) == getattr(y, f), f
        assert type(y.admissible) is tuple
        assert same_float(x.reward, y.reward)
        assert same_float(x.switch_prob, y.switch_prob)
        for f in ("prompt_ids", "response_ids", "logprobs"):
            if tokens:
                assert_same_array(getattr(x, f), getattr(y, f))
            else:
                assert getattr(y, f) is None


def through_json(d: dict) -> dict:
    line = dumps_json(d)
    assert "\n" not in line and "NaN" not in line.replace('"NaN"', "")
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    return json.loads(line)


# ---------------------------------------------------------------------------------------------
# records


def test_trajectory_round_trip_adversarial():
    tr = nasty_trajectory()
    d = trajectory_to_dict(tr)
    back = trajectory_from_dict(through_json(d))
    assert_same_trajectory(tr, back)
    # spans come back as tuples, switch_prob None stays None, NaN stays NaN
    assert back.turns[0].decision.spans["switch"] == tr.turns[0].decision.spans["switch"]
    assert isinstance(back.turns[0].decision.spans["switch"], tuple)
    assert isinstance(back.turns[0].token_spans["action"], tuple)
    assert back.turns[0].switch_prob is None
    assert math.isnan(back.turns[1].switch_prob)
    assert math.isnan(back.turns[1].reward) and back.turns[2].reward == -math.inf
    assert back.turns[2].switch_prob == 0.123456789


def test_trajectory_round_trip_without_tokens_and_shapes():
    tr = nasty_trajectory(n=2)
    tr.turns[0].prompt_ids = np.zeros((2, 0), dtype=np.uint16)  # empty 2-D array
    tr.turns[1].logprobs = np.array([[0.5, -1.25], [math.inf, 2.0]], dtype=np.float16)
    back = trajectory_from_dict(through_json(trajectory_to_dict(tr)))
    assert_same_trajectory(tr, back)
    d = trajectory_to_dict(tr, with_tokens=False)
    assert "prompt_ids" not in d["turns"][0]
    assert_same_trajectory(tr, trajectory_from_dict(through_json(d)), tokens=False)


def test_decision_without_spans_and_default_group():
    dec = Decision(format="react", switch=None, subgoal=None, action=None, valid=False, reason="x")
    tr = Trajectory(task_id="t", turns=[Turn(observation="", response_text="", decision=dec)])
    back = trajectory_from_dict(through_json(trajectory_to_dict(tr)))
    assert back.group_id == "t" and back.turns[0].decision == dec
    assert back.turns[0].prompt_ids is None and back.turns[0].token_spans is None


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


def test_info_conversion_rule():
    info = {
        "np_int": np.int64(3),
        "np_float": np.float32(0.5),
        "np_bool": np.bool_(True),
        "arr": np.array([[1, 2], [3, 4]], dtype=np.int8),
        "tensor": torch.tensor([0.5, 1.5]),
        "tuple": (1, "a"),
        "set": {3, 1, 2},
        "nan": math.nan,
        "inf": [math.inf, 1.0],
        1: "int key",
        ("a", 1): "tuple key",
        "enum": Color.RED,
        "dc": Point(1, 2.5),
        "path": Path("/tmp/x"),
        "bytes": b"ab\xff",
        "obj": object,
    }
    got = to_jsonable(info)
    assert got["np_int"] == 3 and type(got["np_int"]) is int
    assert got["np_float"] == 0.5 and got["np_bool"] is True
    assert got["arr"] == [[1, 2], [3, 4]] and got["tensor"] == [0.5, 1.5]
    assert got["tuple"] == [1, "a"] and got["set"] == [1, 2, 3]
    assert got["nan"] is None and got["inf"] == [None, 1.0]
    assert got["1"] == "int key" and got['["a", 1]'] == "tuple key"
    assert got["enum"] == "red" and got["dc"] == {"x": 1, "y": 2.5}
    assert got["path"] == "/tmp/x" and got["bytes"] == "ab\ufffd"
    assert got["obj"] == str(object)
    assert to_jsonable(got) == got  # the rule is idempotent
    json.dumps(got, allow_nan=False)
    cyc: list = [1]
    cyc.append(cyc)
    assert to_jsonable(cyc) == [1, "<cycle>"]


def test_turn_extras_pass_through_info():
    tr = nasty_trajectory(n=2)
    extras = [{"adv_action": np.float32(0.25), "adv_switch": None}, {"adv_action": math.nan}]
    back = trajectory_from_dict(through_json(trajectory_to_dict(tr, extras=extras)))
    assert back.turns[0].info["adv_action"] == 0.25 and back.turns[0].info["adv_switch"] is None
    assert back.turns[1].info["adv_action"] is None
    assert back.turns[0].info["note"] == NASTY  # the turn's own info is kept
    back = trajectory_from_dict(trajectory_to_dict(tr, extras={"return": 1.5}))
    assert back.info["return"] == 1.5 and back.info["seed"] == 7
    with pytest.raises(ValueError, match="2 turns but 1"):
        trajectory_to_dict(tr, extras=[{}])


def test_record_errors():
    d = trajectory_to_dict(nasty_trajectory(n=1))
    with pytest.raises(ValueError, match="newer"):
        trajectory_from_dict({**d, "version": 99})
    with pytest.raises(ValueError, match="missing key 'task_id'"):
        trajectory_from_dict({k: v for k, v in d.items() if k != "task_id"})
    tr = nasty_trajectory(n=1)
    tr.turns[0].prompt_ids = np.array(["a"])
    with pytest.raises(TypeError, match=r"Turn\.prompt_ids"):
        trajectory_to_dict(tr)


def test_dumps_json_is_one_strict_line():
    line = dumps_json({"a": "x\u2028y\nz", "b": math.nan, "c": "\ud800", "d": "é"})
    assert "\n" not in line and "\u2028" not in line
    assert json.loads(line) == {"a": "x\u2028y\nz", "b": None, "c": "\ud800", "d": "é"}
    assert "é" in dumps_json({"d": "é"})  # readable when UTF-8 can carry it


# ---------------------------------------------------------------------------------------------
# atomic writes


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two ✓")
    assert p.read_text(encoding="utf-8") == "two ✓"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _listing(p.parent) == ["f.txt"]


def test_atomic_write_keeps_permissions(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    os.chmod(p, 0o600)
    atomic_write_text(p, "new")
    assert (p.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_atomic_write_interrupted_keeps_old_content(tmp_path, monkeypatch, where):
    p = tmp_path / "state.txt"
    atomic_write_text(p, "old content")

    def crash(*a, **k):
        raise OSError("simulated crash")

    # after the new content is (partly) in the temp file: fsync fails or the rename never happens
    monkeypatch.setattr(runlog.os, where, crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(p, "new content " * 1000)
    monkeypatch.undo()
    assert p.read_text() == "old content"
    assert _listing(tmp_path) == ["state.txt"]  # the temp file was removed


def test_atomic_write_hard_crash_leftover_does_not_matter(tmp_path):
    p = tmp_path / "state.txt"
    atomic_write_text(p, "old")
    # a process killed mid-write leaves a partial hidden temp file behind
    (tmp_path / ".state.txt.abc.tmp").write_text("ne")
    assert p.read_text() == "old"
    atomic_write_text(p, "new")
    assert p.read_text() == "new"


# ---------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_append_and_read(tmp_path):
    p = tmp_path / "log.jsonl"
    with JsonlLog(p) as log:
        log.append({"iteration": 1, "x": 0.5})
        log.extend([{"iteration": 2, "x": math.nan}, {"iteration": 3, "s": NASTY}])
    assert read_jsonl(p) == [
        {"iteration": 1, "x": 0.5},
        {"iteration": 2, "x": None},
        {"iteration": 3, "s": NASTY},
    ]
    assert p.read_bytes().count(b"\n") == 3


def test_jsonl_recovers_from_torn_last_line(tmp_path):
    p = tmp_path / "log.jsonl"
    with JsonlLog(p) as log:
        log.append({"iteration": 1})
        log.append({"iteration": 2})
    good = p.read_bytes()
    with open(p, "ab") as f:  # a crash in the middle of writing line 3
        f.write(b'{"iteration": 3, "lo')
    assert read_jsonl(p) == [{"iteration": 1}, {"iteration": 2}]  # tolerant, silent
    with pytest.warns(RuntimeWarning, match="torn last line"):
        log = JsonlLog(p)
    assert log.repaired_bytes == len(b'{"iteration": 3, "lo')
    assert p.read_bytes() == good
    log.append({"iteration": 3})
    log.close()
    assert [r["iteration"] for r in read_jsonl(p)] == [1, 2, 3]


def test_jsonl_torn_only_line_and_zero_fill(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"itera')
    with pytest.warns(RuntimeWarning):
        JsonlLog(p).close()
    assert p.read_bytes() == b""
    p.write_bytes(b'{"a":1}\n\x00\x00\x00\x00')  # file size extended, data never written
    with pytest.warns(RuntimeWarning):
        JsonlLog(p).close()
    assert p.read_bytes() == b'{"a":1}\n'
    p.write_bytes(b'{"a":1}\n{"a":2}')  # complete record, only the newline is missing: kept
    JsonlLog(p).close()
    assert p.read_bytes() == b'{"a":1}\n{"a":2}\n'


def test_jsonl_failed_write_is_rolled_back(tmp_path, monkeypatch):
    p = tmp_path / "log.jsonl"
    log = JsonlLog(p)
    log.append({"iteration": 1})

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(runlog.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        log.append({"iteration": 2, "big": "x" * 10000})
    monkeypatch.undo()
    log.append({"iteration": 3})
    log.close()
    assert read_jsonl(p) == [{"iteration": 1}, {"iteration": 3}]


def test_read_jsonl_skips_bad_middle_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"a":1}\nnot json\n\n{"a":2}\n')
    with pytest.warns(RuntimeWarning, match=":2: skipped"):
        assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")


def test_jsonl_rejects_unencodable_record_without_writing(tmp_path):
    p = tmp_path / "log.jsonl"
    with JsonlLog(p) as log, pytest.raises(TypeError):
        log.extend([{"a": 1}, "not a mapping"])
    assert p.read_bytes() == b""


def test_truncate_after_in_order_and_out_of_order(tmp_path):
    p = tmp_path / "log.jsonl"
    log = JsonlLog(p)
    log.extend([{"iteration": i} for i in range(1, 6)])
    assert log.truncate_after(3) == 2
    log.append({"iteration": 4, "resumed": True})
    assert read_jsonl(p) == [{"iteration": i} for i in (1, 2, 3)] + [
        {"iteration": 4, "resumed": True}
    ]
    assert log.truncate_after(10) == 0
    log.close()
    # not in order (and a line without an iteration): an atomic rewrite keeps the others
    p.write_bytes(b'{"iteration":1}\n{"iteration":5}\n{"note":"x"}\n{"iteration":2}\n')
    with JsonlLog(p) as log:
        assert log.truncate_after(2) == 1
    assert read_jsonl(p) == [{"iteration": 1}, {"note": "x"}, {"iteration": 2}]


# ---------------------------------------------------------------------------------------------
# metrics


def _scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_metrics_logger_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsLogger(tmp_path) as m:
        m.log(1, {"loss": 0.5, "ev": math.nan, "n": np.int64(7), "t": torch.tensor(2.0)})
        m.log(2, {"loss": 0.25, "ev": 0.1, "n": 8, "t": 1.0})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 0.5 and rows[0]["ev"] is None and rows[0]["n"] == 7
    assert all(isinstance(r["wall_time"], float) for r in rows)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert _scalars(tmp_path / "tb", "loss") == [(1, 0.5), (2, 0.25)]
    assert _scalars(tmp_path / "tb", "t") == [(1, 2.0), (2, 1.0)]


def test_metrics_logger_resume_truncates(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsLogger(tmp_path) as m:
        for it in range(1, 5):
            m.log(it, {"loss": float(it)})
    with MetricsLogger(tmp_path) as m:  # resumed from the checkpoint of iteration 2
        assert m.truncate_after(2) == 2
        m.log(3, {"loss": 30.0})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["iteration"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert _scalars(tmp_path / "tb", "loss") == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_metrics_logger_errors(tmp_path):
    m = MetricsLogger(tmp_path, tensorboard=False)
    with pytest.raises(TypeError, match="'bad' must be a number"):
        m.log(1, {"bad": "x"})
    with pytest.raises(TypeError, match="'vec' must be a number"):
        m.log(1, {"vec": np.ones(3)})
    with pytest.raises(ValueError, match="reserved"):
        m.log(1, {"iteration": 1})
    with pytest.raises(ValueError, match="non-negative"):
        m.log(-1, {})
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.log(2, {"x": 1.0})
    assert not (tmp_path / "tb").exists()


def test_metrics_logger_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ImportError, match="pip install wandb"):
        MetricsLogger(tmp_path, tensorboard=False, wandb={"project": "p"})

    calls = []

    class Run:
        def define_metric(self, *a, **k):
            calls.append(("define_metric", a, k))

        def log(self, d):
            calls.append(("log", d))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **k: calls.append(("init", k)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with MetricsLogger(tmp_path, tensorboard=False, wandb={"project": "p"}) as m:
        m.log(3, {"loss": 1.5})
    init = calls[0][1]
    assert init["project"] == "p" and init["resume"] == "allow" and init["dir"] == str(tmp_path)
    run_id = init["id"]
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id
    assert ("log", {"loss": 1.5, "iteration": 3}) in calls and calls[-1] == ("finish",)
    calls.clear()
    MetricsLogger(tmp_path, tensorboard=False, wandb={"project": "p"}).close()
    assert calls[0][1]["id"] == run_id  # a resumed run continues the same W&B run


# ---------------------------------------------------------------------------------------------
# trajectory log


def test_trajectory_log_round_trip_and_truncate(tmp_path):
    trs = [nasty_trajectory("a", 3), nasty_trajectory("b", 2)]
    extras = [[{"adv_action": 0.5}, {"adv_action": -0.5}, {"adv_action": 0.0}], None]
    with TrajectoryLog(tmp_path) as log:
        assert log.append(1, "train", trs, extras=extras) == 2
        log.append(1, "eval", trs[:1])
        log.append(2, "train", trs)
        with pytest.raises(ValueError, match="1 extras were given for 2"):
            log.append(3, "train", trs, extras=[None])
        with pytest.raises(ValueError, match="split"):
            log.append(3, "", trs)
    got = read_trajectories(tmp_path, iteration=1, split="train")
    assert [meta for meta, _ in got] == [{"iteration": 1, "split": "train"}] * 2
    assert got[0][1].turns[1].info["adv_action"] == -0.5
    for orig, (_, back) in zip(trs, got, strict=True):
        for t in back.turns:
            t.info.pop("adv_action", None)
        assert_same_trajectory(orig, back)
    assert len(read_trajectories(tmp_path / "trajectories.jsonl")) == 5
    with TrajectoryLog(tmp_path, with_tokens=False) as log:
        assert log.truncate_after(1) == 2
        log.append(2, "eval", trs[:1])
    rows = read_jsonl(tmp_path / "trajectories.jsonl")
    assert [(r["iteration"], r["split"]) for r in rows] == [
        (1, "train"),
        (1, "train"),
        (1, "eval"),
        (2, "eval"),
    ]
    assert "prompt_ids" not in rows[-1]["turns"][0]


# ---------------------------------------------------------------------------------------------
# checkpoints: fast tests with a stub policy


class StubPolicy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(2, 1)

    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True)
        torch.save(self.state_dict(), d / "weights.pt")
        return d


def stub_optimizer(policy: StubPolicy) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [
            {"params": list(policy.a.parameters()), "lr": 1e-2, "name": "actor"},
            {"params": list(policy.b.parameters()), "lr": 1e-3, "name": "critic"},
        ]
    )


def ckpt_names(run: Path) -> list[str]:
    return [p.name for p in list_checkpoints(run)]


def latest(run: Path) -> str:
    return (run / "checkpoints" / "latest").read_text().strip()


def test_checkpoint_save_load_and_keep_last(tmp_path):
    pol = StubPolicy()
    opt = stub_optimizer(pol)
    for it in range(1, 5):
        path = save_checkpoint(tmp_path, it, policy=pol, optimizer=opt, extra={"seed": it})
        assert path == tmp_path / "checkpoints" / f"iter_{it:06d}"
    assert ckpt_names(tmp_path) == ["iter_000003", "iter_000004"]
    assert latest(tmp_path) == "iter_000004"
    assert _listing(tmp_path / "checkpoints") == ["iter_000003", "iter_000004", "latest"]
    ck = load_checkpoint(tmp_path)
    assert ck.iteration == 4 and ck.extra == {"seed": 4}
    assert ck.policy_dir == path / "policy" and (ck.policy_dir / "weights.pt").is_file()
    assert ck.optimizer_path.is_file() and ck.rng_path.is_file() and ck.scheduler_path is None
    state = json.loads(ck.state_path.read_text())
    assert state["optimizer"]["param_groups"][0]["params"] == ["a.weight", "a.bias"]
    # the run folder, its checkpoints folder and the checkpoint folder itself all load
    assert load_checkpoint(tmp_path / "checkpoints").path == ck.path
    assert load_checkpoint(ck.path).iteration == 4
    assert load_checkpoint(tmp_path / "checkpoints" / "iter_000003").iteration == 3
    # keep=None keeps everything; re-saving an iteration replaces it
    save_checkpoint(tmp_path, 5, policy=pol, optimizer=opt, keep=None)
    save_checkpoint(tmp_path, 5, policy=pol, optimizer=opt, extra={"v": 2}, keep=None)
    assert ckpt_names(tmp_path) == ["iter_000003", "iter_000004", "iter_000005"]
    assert load_checkpoint(tmp_path).extra == {"v": 2}
    # resuming from an earlier checkpoint: its later checkpoints are dropped on the next save
    save_checkpoint(tmp_path, 4, policy=pol, optimizer=opt, keep=2)
    assert ckpt_names(tmp_path) == ["iter_000003", "iter_000004"]
    assert latest(tmp_path) == "iter_000004"


def test_checkpoint_crash_during_save_keeps_latest(tmp_path, monkeypatch):
    pol = StubPolicy()
    opt = stub_optimizer(pol)
    save_checkpoint(tmp_path, 1, policy=pol, optimizer=opt, extra={"n": 1})
    before = _listing(tmp_path / "checkpoints")

    def crash(directory):
        Path(directory).mkdir(parents=True)
        (Path(directory) / "half").write_text("partial")
        raise RuntimeError("killed while saving the policy")

    monkeypatch.setattr(pol, "save", crash)
    with pytest.raises(RuntimeError, match="killed"):
        save_checkpoint(tmp_path, 2, policy=pol, optimizer=opt)
    assert latest(tmp_path) == "iter_000001"
    assert _listing(tmp_path / "checkpoints") == before  # nothing partial left, even hidden
    assert load_checkpoint(tmp_path).iteration == 1


def test_checkpoint_crash_after_rename_before_latest(tmp_path, monkeypatch):
    pol = StubPolicy()
    opt = stub_optimizer(pol)
    save_checkpoint(tmp_path, 1, policy=pol, optimizer=opt, keep=1)

    def crash(*a, **k):
        raise OSError("killed before latest was updated")

    monkeypatch.setattr(ckpt_mod, "atomic_write_text", crash)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(tmp_path, 2, policy=pol, optimizer=opt, keep=1)
    monkeypatch.undo()
    # the new folder is complete but `latest` was not moved and nothing was pruned
    assert latest(tmp_path) == "iter_000001"
    assert ckpt_names(tmp_path) == ["iter_000001", "iter_000002"]
    assert load_checkpoint(tmp_path).iteration == 1


def test_checkpoint_hard_crash_leftovers_are_invisible_and_cleaned(tmp_path):
    pol = StubPolicy()
    opt = stub_optimizer(pol)
    save_checkpoint(tmp_path, 1, policy=pol, optimizer=opt)
    root = tmp_path / "checkpoints"
    # a process killed mid-save leaves a hidden temp folder (and maybe a latest temp file)
    (root / ".tmp-iter_000002-x" / "policy").mkdir(parents=True)
    (root / ".latest.abc.tmp").write_text("iter_0000")
    assert ckpt_names(tmp_path) == ["iter_000001"]
    assert load_checkpoint(tmp_path).iteration == 1
    save_checkpoint(tmp_path, 2, policy=pol, optimizer=opt)
    assert _listing(root) == ["iter_000001", "iter_000002", "latest"]


def test_checkpoint_latest_missing_or_dangling(tmp_path):
    pol = StubPolicy()
    opt = stub_optimizer(pol)
    for it in (1, 2):
        save_checkpoint(tmp_path, it, policy=pol, optimizer=opt)
    root = tmp_path / "checkpoints"
    (root / "latest").unlink()
    assert load_checkpoint(tmp_path).iteration == 2
    (root / "latest").write_text("iter_000009\n")
    with pytest.warns(RuntimeWarning, match="iter_000009"):
        assert load_checkpoint(tmp_path).iteration == 2


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint found in .*empty_run"):
        load_checkpoint(tmp_path / "empty_run")
    (tmp_path / "empty_run" / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run"):
        load_checkpoint(tmp_path / "empty_run")

    pol = StubPolicy()
    opt = stub_optimizer(pol)
    run = tmp_path / "run"
    save_checkpoint(run, 1, policy=pol, optimizer=opt)
    path = save_checkpoint(run, 2, policy=pol, optimizer=opt)
    (path / "state.json").write_text('{"format_version": 1, "iterat')
    with pytest.raises(CheckpointError, match=r"state.json is corrupt.*iter_000001"):
        load_checkpoint(run)
    (path / "state.json").write_text('{"format_version": 1, "iteration": "x"}')
    with pytest.raises(CheckpointError, match="iteration is 'x'"):
        load_checkpoint(path)
    ck = load_checkpoint(run / "checkpoints" / "iter_000001")
    (ck.path / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete: missing optimizer\.pt"):
        load_checkpoint(ck.path)
    with pytest.raises(ValueError, match="iteration"):
        save_checkpoint(run, -1, policy=pol, optimizer=opt)


def test_restore_state_checks_optimizer_layout(tmp_path):
    pol = StubPolicy()
    save_checkpoint(tmp_path, 1, policy=pol, optimizer=stub_optimizer(pol))
    ck = load_checkpoint(tmp_path)
    one_group = torch.optim.AdamW(pol.parameters())
    with pytest.raises(CheckpointError, match="2 parameter groups"):
        restore_state(ck, one_group)
    swapped = torch.optim.AdamW(
        [{"params": list(pol.b.parameters())}, {"params": list(pol.a.parameters())}]
    )
    with pytest.raises(CheckpointError, match="shapes or order"):
        restore_state(ck, swapped)
    with pytest.raises(CheckpointError, match="holds AdamW state"):
        restore_state(ck, torch.optim.SGD([{"params": [p]} for p in (pol.a.weight,)], lr=0.1))
    reordered = torch.optim.AdamW(
        [
            {"params": [pol.a.weight, pol.a.bias]},
            {"params": [pol.b.weight, pol.b.bias]},
        ]
    )
    restore_state(ck, reordered, policy=pol)  # same names, same order: fine


def test_rng_states_round_trip(tmp_path):
    pol = StubPolicy()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path, 1, policy=pol, optimizer=stub_optimizer(pol))
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(), torch.rand(4))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_state(load_checkpoint(tmp_path), stub_optimizer(pol))
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(), torch.rand(4))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


# ---------------------------------------------------------------------------------------------
# checkpoints: exact resume of a real (tiny) policy


def _make_optimizer(policy):
    groups = [
        {"params": [p for p in policy.actor_parameters() if p.requires_grad], "name": "actor"},
        {"params": [p for p in policy.critic_parameters() if p.requires_grad], "name": "critic"},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + step))
    return opt, sched


def _train(policy, opt, sched, steps: int) -> None:
    policy.train()
    vocab = policy.lm.config.vocab_size
    for _ in range(steps):
        ids = torch.randint(3, vocab, (2, 10))  # draws from torch's global RNG
        mask = torch.ones_like(ids)
        mask[1, :2] = 0
        out = policy(ids, mask)
        loss = -(out.logprobs * mask).sum() / mask.sum() + (out.values - 0.5).pow(2).mean()
        loss = loss * (1.0 + random.random() + float(np.random.rand()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(5)


def _seed(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@pytest.mark.parametrize("lora", [False, True])
def test_resume_continues_identically(tiny_model_dir, tmp_path, lora):
    pytest.importorskip("transformers")
    from hiper.models.policy import LoraSettings, load_policy

    settings = LoraSettings(r=4, alpha=8.0, target_modules=("q_proj", "v_proj")) if lora else None

    # uninterrupted: 3 steps
    _seed(0)
    a = load_policy(tiny_model_dir, lora=settings, reference=False)
    opt_a, sched_a = _make_optimizer(a)
    _train(a, opt_a, sched_a, 3)
    draws_a = _draws()

    # interrupted: 1 step, checkpoint, fresh process state, reload, restore, 2 steps
    _seed(0)
    b = load_policy(tiny_model_dir, lora=settings, reference=False)
    opt_b, sched_b = _make_optimizer(b)
    _train(b, opt_b, sched_b, 1)
    save_checkpoint(
        tmp_path, 1, policy=b, optimizer=opt_b, scheduler=sched_b, extra={"env_seed": 5}
    )
    del b, opt_b, sched_b
    _seed(12345)  # whatever happens in between
    ck = load_checkpoint(tmp_path)
    assert ck.iteration == 1 and ck.extra == {"env_seed": 5}
    c = load_policy(ck.policy_dir, reference=False)
    opt_c, sched_c = _make_optimizer(c)
    restore_state(ck, opt_c, sched_c, policy=c)
    assert opt_c.param_groups[0]["lr"] == pytest.approx(1e-2 / 2)  # after step 1 of 3
    _train(c, opt_c, sched_c, 2)
    draws_c = _draws()

    params_a = dict(a.named_parameters())
    params_c = dict(c.named_parameters())
    assert params_a.keys() == params_c.keys()
    trainable = [n for n, p in params_a.items() if p.requires_grad]
    assert trainable
    for name in params_a:
        torch.testing.assert_close(params_c[name], params_a[name], rtol=0, atol=1e-7, msg=name)
    # the trained weights really moved (the comparison is not vacuous)
    fresh = dict(load_policy(tiny_model_dir, lora=settings, reference=False).named_parameters())
    assert any(not torch.equal(fresh[n], params_a[n]) for n in trainable if n in fresh)
    assert draws_a[:2] == draws_c[:2] and torch.equal(draws_a[2], draws_c[2])
    assert sched_c.state_dict()["last_epoch"] == sched_a.state_dict()["last_epoch"] == 3
