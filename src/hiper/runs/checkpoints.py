"""Crash-safe training checkpoints: policy, optimizer, scheduler, RNG states and counters.

Layout::

    run_dir/checkpoints/
        latest                 # text: the folder name of the last complete checkpoint
        iter_000012/
            policy/            # PolicyModel.save (load it with hiper.models.load_policy)
            optimizer.pt       # optimizer.state_dict()
            scheduler.pt       # scheduler.state_dict() (only when a scheduler was saved)
            rng.pt             # python `random`, numpy global, torch CPU (and CUDA) RNG states
            state.json         # format_version, iteration, extra, file names and sizes,
                               # optimizer groups

:func:`save_checkpoint` builds the whole folder under a hidden temporary name (``.tmp-*``), fsyncs
every file, renames it into place, and only then rewrites ``latest`` atomically; older
checkpoints are deleted after that. A crash at any point leaves the previous checkpoint and
``latest`` intact, and a half-built folder is never named ``iter_*`` (leftovers are hidden and
removed by the next successful save). :func:`load_checkpoint` follows ``latest`` (or, when it
is missing or dangling, takes the newest complete ``iter_*`` folder). ``state.json`` records the
size of every file, so a checkpoint damaged after the fact (a truncated ``model.safetensors``) is
refused when it is read; with ``fallback=True`` the newest intact checkpoint is taken instead and
the refused ones are named in :attr:`Checkpoint.skipped`.

Resuming: load the policy from :attr:`Checkpoint.policy_dir`, build the optimizer (and
scheduler) over it exactly as at the start of the run (same parameter order), then
:func:`restore_state` loads their states and the RNG states, so training continues as if it had
never stopped. The optimizer's recorded parameter shapes (and names) are checked against the
fresh optimizer. Saved hyper-parameters (learning rates, ...) come back with the optimizer state.

All ``.pt`` files hold only tensors and plain containers and are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiper.runs.faults import crash_point
from hiper.runs.log import atomic_write_text, fsync_dir
from hiper.runs.records import to_jsonable

__all__ = [
    "CHECKPOINTS_DIR",
    "LATEST_FILE",
    "STATE_FILE",
    "Checkpoint",
    "CheckpointError",
    "capture_rng_state",
    "checkpoint_name",
    "list_checkpoints",
    "load_checkpoint",
    "remove_leftovers",
    "restore_rng_state",
    "restore_state",
    "save_checkpoint",
]

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
STATE_FILE = "state.json"
POLICY_DIR = "policy"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
FORMAT_VERSION = 1
_NAME = re.compile(r"^iter_(\d{6,})$")
_LEFTOVER_PREFIXES = (".tmp-", ".old-", ".del-")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used: corrupt or incomplete ``state.json``, missing
    files, or optimizer state that does not fit the optimizer it is restored into."""


def checkpoint_name(iteration: int) -> str:
    """``iter_000012`` for iteration 12."""
    return f"iter_{iteration:06d}"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder, as read by :func:`load_checkpoint`."""

    path: Path  # the iter_* folder
    iteration: int
    extra: dict[str, Any]
    state: dict[str, Any]  # the whole state.json
    skipped: tuple[str, ...] = ()  # newer checkpoints refused on the way here, with the reason

    @property
    def policy_dir(self) -> Path:
        return self.path / self.state["files"]["policy"]

    @property
    def optimizer_path(self) -> Path:
        return self.path / self.state["files"]["optimizer"]

    @property
    def scheduler_path(self) -> Path | None:
        name = self.state["files"].get("scheduler")
        return self.path / name if name else None

    @property
    def rng_path(self) -> Path:
        return self.path / self.state["files"]["rng"]

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE


# ---------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states: python ``random``, numpy's global ``np.random``, torch CPU and,
    when CUDA is available, every CUDA device (plain lists / tensors, ``weights_only``-safe)."""
    version, py_state, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
        "numpy": {
            "name": str(np_name),
            "keys": [int(k) for k in np_keys],
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs to a state from :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            np.array(n["keys"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(
                f"the checkpoint holds {len(cuda)} CUDA RNG states but "
                f"{torch.cuda.device_count()} devices are visible; CUDA RNGs not restored",
                RuntimeWarning,
                stacklevel=2,
            )


# ---------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    run_dir: str | os.PathLike,
    iteration: int,
    *,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    extra: dict[str, Any] | None = None,
    keep: int | None = 2,
    policy_state: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/iter_{iteration:06d}`` atomically and point ``latest`` at it.

    ``policy`` needs a ``save(directory)`` method (:meth:`PolicyModel.save`); its
    ``named_parameters()``, when it has them, name the optimizer's parameters in ``state.json``.
    ``extra``: JSON data resumed with the checkpoint (env seeds, counters, ...), converted by
    :func:`hiper.runs.records.to_jsonable`. The RNG states are captured first, before anything
    else can draw. Re-saving an existing iteration replaces it.

    ``keep``: how many checkpoints to keep (None: all). After the new checkpoint is complete and
    ``latest`` points to it, the checkpoints of later iterations (left over from before a resume
    from an earlier checkpoint) and all but the newest ``keep`` of the others are deleted.
    Returns the checkpoint folder.

    ``policy_state``/``optimizer_state``: the whole states of a sharded policy and its optimizer
    (``hiper.train.distributed.full_state_dict``/``full_optimizer_state``), written instead of
    the shards the objects hold: the checkpoint is the one a single process writes.
    """
    if isinstance(iteration, bool) or not isinstance(iteration, int | np.integer) or iteration < 0:
        raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}")
    iteration = int(iteration)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive integer or None, got {keep!r}")
    extra_json = to_jsonable(dict(extra or {}))
    rng = capture_rng_state()

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(iteration)
    final = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        if policy_state is None:
            policy.save(tmp / POLICY_DIR)
        else:
            policy.save(tmp / POLICY_DIR, state_dict=policy_state)
        if optimizer_state is None:
            optimizer_state = optimizer.state_dict()
        _torch_save(optimizer_state, tmp / OPTIMIZER_FILE)
        if scheduler is not None:
            _torch_save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
        _torch_save(rng, tmp / RNG_FILE)
        state = {
            "format_version": FORMAT_VERSION,
            "iteration": iteration,
            "created": time.time(),
            "extra": extra_json,
            "files": {
                "policy": POLICY_DIR,
                "optimizer": OPTIMIZER_FILE,
                "scheduler": SCHEDULER_FILE if scheduler is not None else None,
                "rng": RNG_FILE,
            },
            "optimizer": _optimizer_layout(optimizer, policy),
            "scheduler": {"class": type(scheduler).__name__} if scheduler is not None else None,
            "sizes": _file_sizes(tmp),  # what a reader checks to refuse a damaged copy
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        crash_point("checkpoint")
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    atomic_write_text(root / LATEST_FILE, name + "\n")
    if keep is not None:
        _prune(root, iteration, keep)
    _remove_leftovers(root)
    return final


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(q.relative_to(folder)): q.stat().st_size
        for q in sorted(folder.rglob("*"))
        if q.is_file() and q.name != STATE_FILE
    }


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)


def _optimizer_layout(optimizer: torch.optim.Optimizer, policy: Any) -> dict[str, Any]:
    names: dict[int, str] = {}
    if hasattr(policy, "named_parameters"):
        names = {id(p): n for n, p in policy.named_parameters()}
    return {
        "class": type(optimizer).__name__,
        "param_groups": [
            {
                "name": g.get("name"),
                "params": [names.get(id(p)) for p in g["params"]],
                "shapes": [list(p.shape) for p in g["params"]],
            }
            for g in optimizer.param_groups
        ],
    }


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.replace(tmp, final)
        return
    # re-saving an iteration: move the old folder aside (hidden), then rename the new one in
    aside = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: first renamed to a hidden name, so a crash mid-delete never
    leaves a partial ``iter_*`` folder."""
    hidden = path.parent / f".del-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _prune(root: Path, current: int, keep: int) -> None:
    found = _complete_checkpoints(root)
    older = [p for it, p in found if it <= current]
    for it, p in found:
        if it > current:
            _remove(p)
    for p in older[: max(0, len(older) - keep)]:
        _remove(p)


def remove_leftovers(run_dir: str | os.PathLike) -> None:
    """Delete what an interrupted save left in ``run_dir``'s checkpoints folder (hidden
    temporary folders and files); complete checkpoints are untouched."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        _remove_leftovers(root)


def _remove_leftovers(root: Path) -> None:
    for p in root.iterdir():
        if p.name.startswith(_LEFTOVER_PREFIXES):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        elif p.name.startswith(f".{LATEST_FILE}.") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Loading


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _checkpoints_root(path: Path) -> Path:
    return path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders of a run folder (or of its ``checkpoints`` folder),
    oldest iteration first."""
    return [p for _, p in _complete_checkpoints(_checkpoints_root(Path(run_dir)))]


def load_checkpoint(path: str | os.PathLike, *, fallback: bool = False) -> Checkpoint:
    """Read a checkpoint: ``path`` is a run folder (its latest checkpoint), its ``checkpoints``
    folder, or one ``iter_*`` checkpoint folder.

    Raises FileNotFoundError when there is no checkpoint there, :class:`CheckpointError` when the
    checkpoint is corrupt or incomplete. With ``fallback`` (a run or checkpoints folder only), a
    corrupt or incomplete latest checkpoint is passed over for the newest one that reads
    cleanly; the returned checkpoint's ``skipped`` names each one passed over and why.
    """
    if fallback:
        return _load_newest_intact(Path(path))
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint found: {str(p)!r} does not exist")
    if (p / STATE_FILE).exists():
        return _read_checkpoint(p)
    if _NAME.match(p.name) and p.is_dir():
        raise CheckpointError(f"{p} is not a complete checkpoint: it has no {STATE_FILE}")
    root = _checkpoints_root(p)
    latest = root / LATEST_FILE
    if latest.is_file():
        try:
            name = latest.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if _NAME.match(name) and (root / name).is_dir():
            return _read_checkpoint(root / name)
        found = _complete_checkpoints(root)
        if found:
            warnings.warn(
                f"{latest} names {name!r}, which is not a checkpoint folder; using the newest "
                f"complete checkpoint, {found[-1][1].name}",
                RuntimeWarning,
                stacklevel=2,
            )
    found = _complete_checkpoints(root)
    if not found:
        raise FileNotFoundError(
            f"no checkpoint found in {str(p)!r}: expected a run folder with "
            f"{CHECKPOINTS_DIR}/{LATEST_FILE} or {CHECKPOINTS_DIR}/iter_* checkpoint folders, "
            f"or a checkpoint folder with {STATE_FILE}"
        )
    return _read_checkpoint(found[-1][1])


def _load_newest_intact(p: Path) -> Checkpoint:
    root = _checkpoints_root(p)
    candidates = [folder for _, folder in reversed(_complete_checkpoints(root))]
    if not candidates:
        return load_checkpoint(p)  # the plain errors: nothing there, or not a run folder
    try:  # the one ``latest`` names first (normally the newest anyway)
        named = root / (root / LATEST_FILE).read_text(encoding="utf-8").strip()
        candidates.sort(key=lambda folder: folder != named)
    except (OSError, UnicodeDecodeError):
        pass
    skipped: list[str] = []
    for folder in candidates:
        try:
            ckpt = _read_checkpoint(folder)
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        return Checkpoint(ckpt.path, ckpt.iteration, ckpt.extra, ckpt.state, tuple(skipped))
    raise CheckpointError(f"no intact checkpoint in {str(p)!r}: " + "; ".join(skipped))


def _read_checkpoint(folder: Path) -> Checkpoint:
    state_path = folder / STATE_FILE
    others = [q.name for q in list_checkpoints(folder.parent) if q != folder]
    hint = f" (other checkpoints here: {', '.join(others)})" if others else ""
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not a complete checkpoint: no {STATE_FILE}") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{state_path} is corrupt ({e}); cannot resume from it{hint}") from e
    problems = []
    if not isinstance(state, dict):
        problems.append("not a JSON object")
        state = {}
    elif state.get("format_version") != FORMAT_VERSION:
        problems.append(
            f"format_version is {state.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    it = state.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        problems.append(f"iteration is {it!r}")
    files = state.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(files.get(k), str) for k in ("policy", "optimizer", "rng")
    ):
        problems.append("files is missing or incomplete")
    if not isinstance(state.get("extra", {}), dict):
        problems.append("extra is not an object")
    opt = state.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list):
        problems.append("optimizer layout is missing")
    if problems:
        raise CheckpointError(f"{state_path} is corrupt: {'; '.join(problems)}{hint}")
    ckpt = Checkpoint(path=folder, iteration=it, extra=dict(state.get("extra") or {}), state=state)
    missing = [
        str(q.relative_to(folder))
        for q in (ckpt.policy_dir, ckpt.optimizer_path, ckpt.rng_path, ckpt.scheduler_path)
        if q is not None and not q.exists()
    ]
    if missing:
        raise CheckpointError(f"checkpoint {folder} is incomplete: missing {', '.join(missing)}")
    sizes = state.get("sizes") or {}  # absent in checkpoints written before sizes were recorded
    for name, size in sizes.items():
        q = folder / name
        actual = q.stat().st_size if q.is_file() else None
        if actual != size:
            found = "missing" if actual is None else f"{actual} bytes"
            raise CheckpointError(
                f"checkpoint {folder} is damaged: {name} is {found}, {size} bytes when written"
            )
    return ckpt


def restore_state(
    ckpt: Checkpoint,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    policy: Any = None,
    rng: bool = True,
) -> None:
    """Load the optimizer (and scheduler) state and, with ``rng=True``, the RNG states.

    ``optimizer`` must be built over the reloaded policy like the saved one (same optimizer
    class, same groups, same parameter order): the recorded parameter shapes, and with
    ``policy`` given also the parameter names, are checked first (:class:`CheckpointError`).
    Call it after everything that may draw random numbers during set-up (model loading, ...).
    """
    layout = ckpt.state["optimizer"]
    _check_optimizer(ckpt, layout, optimizer, policy)
    if scheduler is None and ckpt.scheduler_path is not None:
        warnings.warn(
            f"{ckpt.path} holds a learning-rate scheduler state but no scheduler was given; "
            "it is not restored",
            RuntimeWarning,
            stacklevel=2,
        )
    if scheduler is not None and ckpt.scheduler_path is None:
        raise CheckpointError(f"{ckpt.path} holds no scheduler state to restore")
    optimizer.load_state_dict(_torch_load(ckpt.optimizer_path))
    if scheduler is not None:
        scheduler.load_state_dict(_torch_load(ckpt.scheduler_path))
    if rng:
        restore_rng_state(_torch_load(ckpt.rng_path))


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def _check_optimizer(ckpt: Checkpoint, layout: dict, optimizer, policy) -> None:
    saved_cls = layout.get("class")
    if saved_cls and saved_cls != type(optimizer).__name__:
        raise CheckpointError(
            f"{ckpt.path} holds {saved_cls} state; it cannot be restored into a "
            f"{type(optimizer).__name__}"
        )
    saved = layout["param_groups"]
    groups = optimizer.param_groups
    if len(saved) != len(groups):
        raise CheckpointError(
            f"{ckpt.path}: the saved optimizer has {len(saved)} parameter groups, this one "
            f"{len(groups)}; build the optimizer over the reloaded policy as in the saved run"
        )
    names = {}
    if policy is not None and hasattr(policy, "named_parameters"):
        names = {id(p): n for n, p in policy.named_parameters()}
    for i, (s, g) in enumerate(zip(saved, groups, strict=True)):
        label = f"group {i}" + (f" ({s.get('name')})" if s.get("name") else "")
        shapes = [list(p.shape) for p in g["params"]]
        if shapes != s.get("shapes"):
            raise CheckpointError(
                f"{ckpt.path}: optimizer {label} holds {len(s.get('shapes') or [])} parameters "
                f"that do not match the {len(shapes)} parameters (shapes or order) of the "
                "optimizer given; build it over the reloaded policy with the same parameter order"
            )
        if names:
            current = [names.get(id(p)) for p in g["params"]]
            for j, (a, b) in enumerate(zip(s.get("params") or [], current, strict=False)):
                if a is not None and b is not None and a != b:
                    raise CheckpointError(
                        f"{ckpt.path}: optimizer {label} parameter {j} was {a!r} when saved but "
                        f"is {b!r} now; the parameter order differs"
                    )
