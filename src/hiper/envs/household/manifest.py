"""Evaluation manifests of the household environment, and the script that writes them.

``build(split, n)`` lists ``n`` task ids balanced over the six task types (seeds 0, 1, ... per
type); ``build(split, n, chain_depth=k)`` lists ``n`` chain tasks of depth k. Every eval split
(``eval_in_distribution``, ``eval_out_of_distribution``, ``eval_novel_objects``) has a 120-task
manifest and a 50-task manifest per chain depth. The committed files under
``hiper/envs/manifests/`` are exactly what :func:`write_all` produces; regenerate with::

    python -m hiper.envs.household.manifest

Versions: :data:`VERSION` is the version of the household split definitions; each manifest
records :data:`SPLIT_VERSIONS` of its split, the version in which the episodes its task ids name
last changed, so results on manifests with equal name and version are comparable.

* 1: ``eval_in_distribution`` (unchanged since) and ``eval_out_of_distribution`` = unseen room
  templates with novel receptacle and object types.
* 2: ``eval_out_of_distribution`` = held-out rooms of the training templates (training vocabulary
  only); the version-1 ``eval_out_of_distribution`` episodes move to the new split
  ``eval_novel_objects`` (same kinds and seeds, same episodes).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hiper.envs.base import Manifest
from hiper.envs.household.tasks import MAX_CHAIN_DEPTH, SPLITS, TASK_TYPES, task_id

__all__ = ["MANIFESTS", "SPLIT_VERSIONS", "VERSION", "build", "manifest_name", "write_all"]

#: Version of the household split definitions (see the module docstring).
VERSION = 2
#: The version each split's manifests record: when the episodes of its task ids last changed.
SPLIT_VERSIONS: dict[str, int] = {
    "train": 1,
    "eval_in_distribution": 1,
    "eval_out_of_distribution": 2,
    "eval_novel_objects": 2,
}

#: (split, chain depth or None, number of tasks) of every committed manifest.
MANIFESTS: tuple[tuple[str, int | None, int], ...] = (
    ("eval_in_distribution", None, 120),
    ("eval_out_of_distribution", None, 120),
    ("eval_novel_objects", None, 120),
    *(("eval_out_of_distribution", k, 50) for k in range(1, MAX_CHAIN_DEPTH + 1)),
    *(("eval_in_distribution", k, 50) for k in range(1, MAX_CHAIN_DEPTH + 1)),
    *(("eval_novel_objects", k, 50) for k in range(1, MAX_CHAIN_DEPTH + 1)),
)


def manifest_name(chain_depth: int | None = None) -> str:
    """The ``env`` part of a manifest file name: ``household`` or ``household-chain<k>``."""
    return "household" if chain_depth is None else f"household-chain{chain_depth}"


def build(split: str, n: int, chain_depth: int | None = None) -> Manifest:
    """``n`` task ids of ``split``: balanced over the six types, or chains of ``chain_depth``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if chain_depth is not None:
        if isinstance(chain_depth, bool) or not isinstance(chain_depth, int):
            raise ValueError(f"chain_depth must be None or an integer, got {chain_depth!r}")
        if not 1 <= chain_depth <= MAX_CHAIN_DEPTH:
            raise ValueError(f"chain_depth must be in 1..{MAX_CHAIN_DEPTH}, got {chain_depth}")
        ids = tuple(task_id(split, f"chain{chain_depth}", seed) for seed in range(n))
    else:
        # Seed-major order: the first 6m ids hold m tasks of every type.
        ids = tuple(
            task_id(split, TASK_TYPES[i % len(TASK_TYPES)], i // len(TASK_TYPES)) for i in range(n)
        )
    return Manifest(manifest_name(chain_depth), split, SPLIT_VERSIONS[split], ids)


def manifest_path(directory: Path, manifest: Manifest) -> Path:
    return directory / f"{manifest.env}-{manifest.split}.json"


def write_all(directory: Path | None = None) -> list[Path]:
    """Write every manifest of :data:`MANIFESTS` into ``directory`` (default: the package's)."""
    if directory is None:
        directory = Path(__file__).resolve().parent.parent / "manifests"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for split, depth, n in MANIFESTS:
        manifest = build(split, n, depth)
        path = manifest_path(directory, manifest)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(manifest.to_json() + "\n")
        tmp.replace(path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(p)
