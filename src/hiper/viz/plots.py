"""The viewer's standard learning-curve panels: which logged metrics each chart shows.

:func:`learning_curves` is pure data (titles, metric names, labels, style keys); the page script
draws every chart from it and from the metrics payload (inline SVG built with DOM calls), so the
standard panels and the metric picker share one drawing rule: the same colours, tick format,
smoothing and error bars, and the same overlay of several runs.

A series' ``key`` names what its colour (one run) or its line style (several runs, where colour
names the run) stands for, the same in every chart: ``train`` and ``eval`` (the training batch and
the held-out evaluation), ``split:<name>`` (another evaluation split), ``type:<task type>``,
``level:<level>``, ``head:<value head>`` or the metric itself. A metric the picker plots on its own
gets the key of its split prefix (``train/...``, ``eval/...``), else its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["learning_curves"]

_SPLITS = ("train", "eval")


def _series(metric: str, label: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "label": label, "key": key, **extra}


def learning_curves(
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """``[{"title", "series": [{"metric", "label", "key"[, "transform"]}]}]``: success overall
    and per task type (training and held-out), switch rate, mean segment length, invalid-turn rate,
    advantage variance per level (``transform: "square"`` of ``adv/<level>/std``), explained
    variance per value head, KL and entropy. ``metrics``: one run's metric names (a mapping) or
    several runs' (a list of mappings; a panel shows a metric any of them logged). Panels without
    any logged metric are left out."""
    runs = [metrics] if isinstance(metrics, Mapping) else list(metrics)
    names = sorted({k for m in runs for k in m})
    have = set(names)

    def pick(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
        return [_series(m, m, key) for m, key in pairs if m in have]

    other_splits = [
        k
        for k in names
        if k.endswith("/success") and k.count("/") == 1 and k.split("/")[0] not in _SPLITS
    ]

    def per_type(split: str) -> list[dict[str, Any]]:
        pre = f"{split}/success/"
        return [
            _series(k, k[len(pre) :], f"type:{k[len(pre) :]}")
            for k in names
            if k.startswith(pre) and k.count("/") == 2 and not k.endswith("_std")
        ]

    level = {"low": "A^L (low)", "high": "A^H (high)", "switch": "A^S (switch)"}
    variance = [
        _series(k, f"Var {level.get(lv, lv)}", f"level:{lv}", transform="square")
        for k in names
        if k.startswith("adv/") and k.endswith("/std") and k.count("/") == 2
        for lv in [k.split("/")[1]]
    ]
    heads = [
        _series(k, k.split("/")[-1], f"head:{k.split('/')[-1]}")
        for k in names
        if k.startswith("ppo/explained_var/")
    ]
    panels = [
        (
            "Success",
            pick(("train/success", "train"), ("eval/success", "eval"))
            + [_series(k, k, f"split:{k.split('/')[0]}") for k in other_splits],
        ),
        ("Success per task type (training)", per_type("train")),
        ("Success per task type (held-out evaluation)", per_type("eval")),
        ("Switch rate", pick(("train/switch_rate", "train"), ("eval/switch_rate", "eval"))),
        ("Mean segment length (turns)", pick(("train/segment_length", "train"))),
        ("Invalid-turn rate", pick(("train/invalid_rate", "train"), ("eval/invalid_rate", "eval"))),
        ("Advantage variance per level", variance),
        ("Explained variance per value head", heads),
        (
            "KL to the reference, entropy",
            pick(("ppo/kl", "ppo/kl"), ("ppo/entropy", "ppo/entropy")),
        ),
    ]
    return [{"title": t, "series": s} for t, s in panels if s]
