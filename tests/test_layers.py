"""Each package imports only the layers below it (docs/architecture.md): read from the source,
every import statement, top-level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "hiper"

#: package -> the hiper packages it must never import
FORBIDDEN = {
    "algos": {"envs", "models", "engines", "rollout", "runs", "eval", "train", "viz", "cli"},
    "protocol": {"algos", "envs", "models", "engines", "rollout", "runs", "eval", "train", "viz"},
    "runs": {"rollout", "eval", "train", "viz", "cli"},
    "eval": {"train", "viz", "cli"},
    "viz": {"train", "eval", "cli"},
    "rollout": {"demos", "runs", "eval", "train", "viz", "cli"},
    "demos": {"runs", "eval", "train", "viz", "cli"},
    # models stand alone: a model folder is built and loaded without any other hiper code
    "models": {p.stem for p in SRC.iterdir() if p.stem.isidentifier()} - {"models", "__init__"},
}


def hiper_imports(path: Path) -> set[str]:
    """The hiper subpackages ``path`` imports (``hiper.x.y`` -> ``x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hiper" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package):
    folder = SRC / package
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [SRC / f"{package}.py"]
    assert all(f.is_file() for f in files) and files, f"no sources for hiper.{package}"
    bad = {
        str(f.relative_to(SRC)): sorted(hiper_imports(f) & FORBIDDEN[package])
        for f in files
        if hiper_imports(f) & FORBIDDEN[package]
    }
    assert not bad, f"hiper.{package} imports a higher layer: {bad}"


def test_the_scan_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import os\ndef g():\n    from hiper.train.loop import Trainer\n    import hiper.viz\n"
    )
    assert hiper_imports(f) == {"train", "viz"}
