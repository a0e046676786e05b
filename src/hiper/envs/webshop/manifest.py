"""The evaluation manifest of the webshop environment, and the script that writes it.

``webshop-eval`` lists the eval split's task ids, goals ``"0"`` ... ``"499"`` of the shuffled
synthetic goal list (the standard WebShop test goals). The ids do not depend on the data files: the
goal order is fixed by the official shuffle (seed 233). The committed file under
``hiper/envs/manifests/`` is exactly what :func:`write` produces; regenerate with::

    python -m hiper.envs.webshop.manifest
"""

from __future__ import annotations

import sys
from pathlib import Path

from hiper.envs.base import Manifest
from hiper.envs.webshop.env import EVAL_GOALS

__all__ = ["ENV", "SPLIT", "VERSION", "build", "write"]

ENV = "webshop"
SPLIT = "eval"
VERSION = 1


def build() -> Manifest:
    """The ``webshop-eval`` manifest: goal indices 0..499 as strings."""
    return Manifest(ENV, SPLIT, VERSION, tuple(str(i) for i in range(EVAL_GOALS)))


def write(directory: Path | None = None) -> Path:
    """Write the manifest into ``directory`` (default: the package's manifests folder)."""
    if directory is None:
        directory = Path(__file__).resolve().parent.parent / "manifests"
    directory.mkdir(parents=True, exist_ok=True)
    manifest = build()
    path = directory / f"{manifest.env}-{manifest.split}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.to_json() + "\n")
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
