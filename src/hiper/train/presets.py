"""The training presets shipped with hiper, and presets that extend one another.

The YAML presets live in ``hiper/presets/`` (installed with the package; a checkout's ``configs/``
is a link to that folder). ``hiper train quickstart`` and ``hiper train configs/quickstart.yaml``
name the same file: a path that exists is read as it is, anything else is looked up by preset name
(``quickstart``, ``baselines/household-grpo``; ``.yaml`` optional). ``hiper presets`` lists them.

A preset may start from another one with a top-level ``extends: OTHER`` (a path relative to the
preset's own folder, or a preset name): the other preset's data, itself resolved, is deep-merged
with this one's (mappings merge key by key, anything else is replaced), so a preset holds only what
differs. ``algo.config`` belongs to its estimator: a preset that sets another ``algo.estimator``
than the one it extends does not inherit the other's ``algo.config`` (it brings its own, or the
estimator's defaults). A top-level ``description:`` (one line, shown by ``hiper presets``) is the
preset's own and is not part of the configuration.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hiper.config import ConfigError, load_yaml

#: The folder of the shipped presets.
PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
#: Top-level keys of a preset file that are not configuration.
META_KEYS = ("extends", "description")


@dataclass(frozen=True)
class Preset:
    name: str  # e.g. "quickstart", "baselines/household-grpo"
    path: Path
    description: str
    extends: str | None


def preset_names() -> list[str]:
    """The shipped presets' names, sorted."""
    return sorted(_name(p) for p in PRESETS_DIR.rglob("*.yaml"))


def list_presets() -> list[Preset]:
    """Every shipped preset with its one-line description."""
    out = []
    for name in preset_names():
        path = PRESETS_DIR / f"{name}.yaml"
        data = load_yaml(path)
        extends = data.get("extends")
        out.append(Preset(name, path, describe(path, data), None if extends is None else extends))
    return out


def describe(path: Path, data: dict[str, Any] | None = None) -> str:
    """A preset's one line: its ``description:`` key, else the first line of its leading comment."""
    data = load_yaml(path) if data is None else data
    if isinstance(data.get("description"), str) and data["description"].strip():
        return " ".join(data["description"].split())
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip()
            if text:
                return text
        elif line.strip():
            break
    return ""


def find_preset(name: str) -> Path | None:
    """The shipped preset called ``name`` (``quickstart``, ``baselines/household-grpo``, with or
    without ``.yaml``), or None."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    path = PRESETS_DIR / f"{stem}.yaml"
    return path if path.is_file() else None


def resolve_config_path(config: str | Path) -> Path:
    """A config argument as a file: a path that exists, else a shipped preset of that name."""
    path = Path(config)
    if path.exists():
        return path
    found = find_preset(str(config))
    if found is not None:
        return found
    message = f"config file {str(config)!r} does not exist and is not a preset name"
    close = difflib.get_close_matches(_name_like(str(config)), preset_names(), n=1)
    if close:
        message += f"; did you mean {close[0]}?"
    else:
        message += " (`hiper presets` lists them)"
    raise ConfigError(message)


def load_preset(config: str | Path) -> dict[str, Any]:
    """A preset's configuration data, its ``extends`` chain resolved and merged, without the
    preset-only keys (``extends``, ``description``)."""
    return _load(resolve_config_path(config), ())


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(real) :], real))
        raise ConfigError(f"config file {str(path)!r}: extends forms a cycle: {cycle}")
    raw = load_yaml(path)
    for key in META_KEYS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string in {str(path)!r}, got {value!r}")
    data = {k: v for k, v in raw.items() if k not in META_KEYS}
    parent_name = raw.get("extends")
    if parent_name is None:
        return data
    parent_path = path.parent / parent_name
    if not parent_path.is_file():
        parent_path = find_preset(parent_name)  # type: ignore[assignment]
        if parent_path is None:
            raise ConfigError(
                f"extends: {parent_name!r} in {str(path)!r} is neither a file relative to its "
                "folder nor a preset name (`hiper presets` lists them)"
            )
    parent = _load(parent_path, (*chain, real))
    return _merge_presets(parent, data)


def _merge_presets(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    child_algo = child.get("algo")
    parent_algo = parent.get("algo")
    if (
        isinstance(child_algo, dict)
        and isinstance(parent_algo, dict)
        and "estimator" in child_algo
        and child_algo["estimator"] != _estimator(parent)
    ):
        parent = {**parent, "algo": {k: v for k, v in parent_algo.items() if k != "config"}}
    return deep_merge(parent, child)


def _estimator(data: dict[str, Any]) -> Any:
    """The estimator ``data`` trains with (the default when it does not say)."""
    from hiper.train.config import AlgoConfig

    algo = data.get("algo")
    if isinstance(algo, dict) and "estimator" in algo:
        return algo["estimator"]
    return AlgoConfig.estimator


def _name(path: Path) -> str:
    return path.relative_to(PRESETS_DIR).with_suffix("").as_posix()


def _name_like(text: str) -> str:
    """``configs/quickstrt.yaml`` -> ``quickstrt``: what to compare with the preset names."""
    text = re.sub(r"^(\./)?(configs/|.*/presets/)", "", text.replace("\\", "/"))
    return text.removesuffix(".yaml").removesuffix(".yml")
