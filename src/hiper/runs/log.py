"""Crash-safe run files: atomic writes, append-only JSONL logs, metrics and trajectory logs.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: the new content goes to a temporary
  file in the same folder, is fsync'ed, and replaces the target with ``os.replace`` (then the
  folder is fsync'ed): a reader, or the file after a crash, shows the old content or the new,
  never a mix.
* :class:`JsonlLog`: one JSON object per line, each :meth:`~JsonlLog.append` one complete line,
  flushed and fsync'ed before it returns (a failed write is rolled back). Since every earlier line
  is on disk before the next is written, a crash can only tear the *last* line; opening the log
  drops such a torn tail (bytes after the last newline, with a warning), so the file is always
  valid JSONL. :func:`read_jsonl` reads tolerantly: it skips a torn last line silently (a writer
  may be mid-append) and any other unparsable line with a warning.
* :class:`MetricsLogger`: ``metrics.jsonl`` + TensorBoard (``tb/``) + optional Weights & Biases.
* :class:`TrajectoryLog`: ``trajectories.jsonl``, one line per trajectory
  (:func:`hiper.runs.records.trajectory_to_dict` plus ``iteration`` and ``split``).

On resume, ``truncate_after(iteration)`` drops what a crashed run logged after its last
checkpoint, so nothing is logged twice. One process writes a run folder at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hiper.runs.records import dumps_json, to_jsonable, trajectory_from_dict, trajectory_to_dict
from hiper.types import Trajectory

__all__ = [
    "METRICS_FILE",
    "TB_DIR",
    "TRAJECTORIES_FILE",
    "JsonlLog",
    "MetricsLogger",
    "TrajectoryLog",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "iter_jsonl",
    "read_jsonl",
    "read_trajectories",
]

METRICS_FILE = "metrics.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"
TB_DIR = "tb"
WANDB_ID_FILE = "wandb_run_id"
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Atomic writes


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so a rename / new entry in it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync,
    ``os.replace``, fsync of the folder). On any failure the old content is left untouched and
    the temporary file removed. An existing file's permissions are kept (new files: 0o644)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``."""
    return atomic_write_bytes(path, text.encode(encoding))


# ---------------------------------------------------------------------------------------------
# JSONL


_INVALID = object()


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return _INVALID


def _tail_start(f, end: int) -> int:
    """Offset just after the last b"\\n" before ``end`` (0 if there is none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _repair_torn_tail(path: Path) -> int:
    """Drop the bytes after the last newline of ``path`` (a torn append); return how many.

    A tail that is a complete JSON object (only its newline is missing) is kept and terminated.
    """
    try:
        f = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        keep = _tail_start(f, size)
        if keep == size:
            return 0
        f.seek(keep)
        if isinstance(_parse(f.read(size - keep)), dict):
            f.seek(size)
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(
        f"{path}: dropped a torn last line ({size - keep} bytes) left by an interrupted write",
        RuntimeWarning,
        stacklevel=3,
    )
    return size - keep


def iter_jsonl(path: str | os.PathLike, *, missing_ok: bool = False) -> Iterator[Any]:
    """Yield the JSON values of ``path``, one per line, tolerantly (see the module docstring).

    A missing file raises FileNotFoundError, or yields nothing with ``missing_ok=True``.
    """
    p = Path(path)
    try:
        f = open(p, "rb")  # noqa: SIM115
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    with f:
        lineno = 0
        for line in f:
            lineno += 1
            if not line.strip():
                continue
            value = _parse(line)
            if value is _INVALID:
                if not line.endswith(b"\n"):
                    return  # a torn or in-progress last line
                warnings.warn(
                    f"{p}:{lineno}: skipped a line that is not valid JSON",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            yield value


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = False) -> list[Any]:
    """All JSON values of ``path`` (:func:`iter_jsonl` as a list)."""
    return list(iter_jsonl(path, missing_ok=missing_ok))


def _after(value: Any, key: str, iteration: int) -> bool:
    if not isinstance(value, dict):
        return False
    it = value.get(key)
    return isinstance(it, int | float) and not isinstance(it, bool) and it > iteration


class JsonlLog:
    """Append-only JSONL file; see the module docstring for the crash guarantees.

    Records are dicts written with :func:`hiper.runs.records.dumps_json` (strict JSON; values
    that are not JSON-native, e.g. NaN or numpy numbers, are converted by
    :func:`~hiper.runs.records.to_jsonable`). ``repaired_bytes``: what opening dropped.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _repair_torn_tail(self.path)
        self._f = None
        self._open()

    def _open(self) -> None:
        self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115

    @property
    def closed(self) -> bool:
        return self._f is None

    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` as one complete line, flushed and fsync'ed."""
        self.extend([record])

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write several records (one line each) with one fsync. All are encoded before anything
        is written, so a record that cannot be encoded writes nothing."""
        lines = []
        for r in records:
            if not isinstance(r, Mapping):
                raise TypeError(f"a JSONL record must be a mapping, got {type(r).__name__}")
            lines.append(dumps_json(dict(r)) + "\n")
        if lines:
            self._write("".join(lines).encode("utf-8"))

    def _write(self, data: bytes) -> None:
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        fd = self._f.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = self._f.write(view)
                view = view[n:]
            os.fsync(fd)
        except BaseException:
            # roll back a partial write, so later appends never follow a torn line
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise

    def truncate_after(self, iteration: int, key: str = "iteration") -> int:
        """Drop every record whose ``key`` is greater than ``iteration``; return how many.

        When the dropped records are all at the end (the usual case: iterations are logged in
        order) the file is truncated in place; otherwise it is rewritten atomically. Lines that
        are not valid JSON or have no numeric ``key`` are kept.
        """
        first_drop, dropped, kept_after = None, 0, False
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                if _after(_parse(line), key, iteration):
                    dropped += 1
                    if first_drop is None:
                        first_drop = offset
                elif first_drop is not None:
                    kept_after = True
                offset += len(line)
        if not dropped:
            return 0
        reopen = self._f is not None
        self.close()
        if not kept_after:
            with open(self.path, "r+b") as f:
                f.truncate(first_drop)
                f.flush()
                os.fsync(f.fileno())
        else:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
            )
            try:
                with os.fdopen(fd, "wb") as out, open(self.path, "rb") as f:
                    for line in f:
                        if not _after(_parse(line), key, iteration):
                            out.write(line)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, stat.S_IMODE(os.stat(self.path).st_mode))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fsync_dir(self.path.parent)
        if reopen:
            self._open()
        return dropped

    def read(self) -> list[Any]:
        """All records (:func:`read_jsonl`)."""
        return read_jsonl(self.path)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Metrics


def _check_iteration(iteration: Any) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, int | np.integer) or iteration < 0:
        raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}")
    return int(iteration)


def _scalar(name: str, v: Any) -> int | float:
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v)
    item = getattr(v, "item", None)
    if callable(item):  # one-element numpy arrays and torch tensors
        with contextlib.suppress(ValueError, RuntimeError, TypeError):
            value = item()
            if isinstance(value, bool | int | float):
                return _scalar(name, value)
    raise TypeError(f"metric {name!r} must be a number, got {type(v).__name__}: {v!r}")


class MetricsLogger:
    """Per-iteration scalar metrics: ``run_dir/metrics.jsonl``, TensorBoard and optionally W&B.

    Each :meth:`log` writes one JSONL line ``{"iteration", "wall_time", **metrics}`` (non-finite
    values as ``null``; TensorBoard and W&B get them as they are), the TensorBoard scalars of
    ``run_dir/tb`` (step = iteration, flushed every call) and, when ``wandb`` is given, one
    ``wandb.log`` call.

    ``wandb``: keyword arguments of ``wandb.init`` (e.g. ``{"project": "hiper"}``). Unless it
    sets ``id``, the run id is kept in ``run_dir/wandb_run_id`` so a resumed training run
    continues the same W&B run (``resume="allow"``); ``iteration`` is the step metric of every
    chart, so re-logged iterations after a resume do not clash with W&B's own step counter.
    ``wandb`` is imported only when configured; ``torch.utils.tensorboard`` only with
    ``tensorboard=True``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        wandb: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        if wandb is not None and not isinstance(wandb, Mapping):
            raise TypeError(f"wandb must be a dict of wandb.init arguments, got {wandb!r}")
        self._writer_cls = _summary_writer_class() if tensorboard else None
        wandb_module = _import_wandb() if wandb is not None else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._tb = None
        self._purge_step: int | None = None
        self._wandb = _init_wandb(wandb_module, self.run_dir, wandb) if wandb is not None else None
        self._jsonl = JsonlLog(self.run_dir / METRICS_FILE)

    @property
    def path(self) -> Path:
        return self._jsonl.path

    @property
    def tb_dir(self) -> Path:
        return self.run_dir / TB_DIR

    def log(self, iteration: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Log ``metrics`` (name -> number) for ``iteration``; returns the JSONL record."""
        if self._jsonl.closed:
            raise ValueError("MetricsLogger is closed")
        it = _check_iteration(iteration)
        values: dict[str, int | float] = {}
        for k, v in metrics.items():
            if not isinstance(k, str) or not k:
                raise TypeError(f"metric names must be non-empty strings, got {k!r}")
            if k in ("iteration", "wall_time"):
                raise ValueError(f"{k!r} is a reserved metric name")
            values[k] = _scalar(k, v)
        t = time.time()
        record = {"iteration": it, "wall_time": t, **values}
        self._jsonl.append(to_jsonable(record))
        if self._writer_cls is not None:
            if self._tb is None:
                self._tb = self._writer_cls(log_dir=str(self.tb_dir), purge_step=self._purge_step)
                self._purge_step = None
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=it, walltime=t)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({**values, "iteration": it})
        return record

    def truncate_after(self, iteration: int) -> int:
        """Drop the metrics of iterations after ``iteration`` (call on resume); return how many
        lines were dropped. TensorBoard hides its later points too (the next writer is opened
        with ``purge_step=iteration + 1``); W&B keeps its history (re-logged iterations are
        plotted against ``iteration``)."""
        it = _check_iteration(iteration)
        if self._writer_cls is not None:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            self._purge_step = it + 1
        return self._jsonl.truncate_after(it)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            run, self._wandb = self._wandb, None
            run.finish()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "MetricsLogger(tensorboard=True) needs the `tensorboard` package "
            f"(pip install tensorboard), or pass tensorboard=False ({e})"
        ) from e
    return SummaryWriter


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise ImportError(
            "W&B logging is configured (wandb=...) but the `wandb` package is not installed: "
            "pip install wandb, or remove the wandb settings"
        ) from e
    return wandb


def _init_wandb(wandb, run_dir: Path, cfg: Mapping[str, Any]):
    kwargs = dict(cfg)
    if not kwargs.get("id"):
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else ""
        if not run_id:
            run_id = uuid.uuid4().hex[:12]
            atomic_write_text(id_file, run_id + "\n")
        kwargs["id"] = run_id
    kwargs.setdefault("resume", "allow")
    kwargs.setdefault("dir", str(run_dir))
    run = wandb.init(**kwargs)
    run.define_metric("iteration")
    run.define_metric("*", step_metric="iteration")
    return run


# ---------------------------------------------------------------------------------------------
# Trajectories


class TrajectoryLog:
    """``run_dir/trajectories.jsonl``: one line per trajectory,
    ``{"iteration", "split", **trajectory_to_dict(trajectory, with_tokens=..., extras=...)}``.

    ``with_tokens=False`` leaves the token arrays out of every line (they dominate the size).
    """

    def __init__(self, run_dir: str | os.PathLike, *, with_tokens: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.with_tokens = with_tokens
        self._log = JsonlLog(self.run_dir / TRAJECTORIES_FILE)

    @property
    def path(self) -> Path:
        return self._log.path

    def append(
        self,
        iteration: int,
        split: str,
        trajectories: Sequence[Trajectory],
        extras: Sequence[Any] | None = None,
    ) -> int:
        """Log ``trajectories`` of ``iteration`` under ``split`` ("train" / "eval"); one fsync.

        ``extras``: None, or one entry per trajectory, each None, a mapping merged into that
        trajectory's ``info``, or a list of per-turn mappings merged into each turn's ``info``
        (e.g. the advantages the trainer gave each turn). Returns the number of lines written.
        """
        it = _check_iteration(iteration)
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string such as 'train', got {split!r}")
        trajectories = list(trajectories)
        if extras is None:
            extras = [None] * len(trajectories)
        elif len(extras) != len(trajectories):
            raise ValueError(
                f"{len(extras)} extras were given for {len(trajectories)} trajectories"
            )
        records = [
            {
                "iteration": it,
                "split": split,
                **trajectory_to_dict(tr, with_tokens=self.with_tokens, extras=ex),
            }
            for tr, ex in zip(trajectories, extras, strict=True)
        ]
        self._log.extend(records)
        return len(records)

    def truncate_after(self, iteration: int) -> int:
        """Drop the trajectories of iterations after ``iteration``; return how many."""
        return self._log.truncate_after(_check_iteration(iteration))

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> TrajectoryLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trajectories(
    path: str | os.PathLike,
    *,
    iteration: int | None = None,
    split: str | None = None,
) -> list[tuple[dict[str, Any], Trajectory]]:
    """``(meta, trajectory)`` pairs from a run folder or a ``trajectories.jsonl`` file, optionally
    only those of one ``iteration`` and/or ``split``; ``meta`` is ``{"iteration", "split"}``."""
    p = Path(path)
    if p.is_dir():
        p = p / TRAJECTORIES_FILE
    out = []
    for rec in iter_jsonl(p):
        if not isinstance(rec, dict):
            continue
        if iteration is not None and rec.get("iteration") != iteration:
            continue
        if split is not None and rec.get("split") != split:
            continue
        meta = {"iteration": rec.get("iteration"), "split": rec.get("split")}
        out.append((meta, trajectory_from_dict(rec)))
    return out
