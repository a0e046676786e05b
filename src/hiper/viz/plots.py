"""Learning curves as inline SVG (no plotting library, no script): pure functions of the metrics.

:func:`line_plot` draws named series of ``(x, y)`` points on shared axes; :func:`learning_curves`
picks the viewer's standard panels out of a run's metrics. Every label is HTML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "learning_curves", "line_plot", "nice_ticks"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``: the step is the one of 1, 2, 5 x 10^k
    nearest (in ratio) to ``(hi - lo) / (n - 1)``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got [{lo}, {hi}]")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda c: abs(math.log(c / raw)))
    first = math.floor(lo / step) * step
    ticks = []
    k = 0
    while True:
        t = first + k * step
        ticks.append(round(t, 12))
        if t >= hi - 1e-12 * step:
            break
        k += 1
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.1e}"
    return f"{v:.3g}"


def line_plot(
    title: str,
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    xlabel: str = "iteration",
    width: int = 420,
    height: int = 240,
) -> str:
    """An SVG line chart of ``series`` (name -> [(x, y), ...]); empty series are left out.

    Points are drawn as a polyline plus a dot each (a single evaluation point stays visible).
    Each ``<svg>`` carries ``class="plot"`` and ``data-series`` (the number of series drawn).
    """
    drawn = {k: [(float(x), float(y)) for x, y in v] for k, v in series.items() if len(v)}
    drawn = {
        k: [p for p in v if math.isfinite(p[0]) and math.isfinite(p[1])] for k, v in drawn.items()
    }
    drawn = {k: v for k, v in drawn.items() if v}
    cols = 2 if all(len(k) <= 26 for k in drawn) else 1  # legend columns
    left, right, top = 52, 12, 24
    h = height + 14 * ((len(drawn) + cols - 1) // cols)
    out = [
        f'<svg class="plot" data-series="{len(drawn)}" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{h}" viewBox="0 0 {width} {h}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text class="plot-title" x="{width / 2}" y="15" text-anchor="middle">{escape(title)}'
        "</text>",
    ]
    if not drawn:
        out.append(f'<text x="{width / 2}" y="{h / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    xs = [p[0] for v in drawn.values() for p in v]
    ys = [p[1] for v in drawn.values() for p in v]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - 38

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    for t in yt:
        y = sy(t)
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">')
        out.append(f"{escape(_fmt(t))}</text>")
    for t in xt:
        x = sx(t)
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle">'
            f"{escape(_fmt(t))}</text>"
        )
    out.append(f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none"/>')
    out.append(
        f'<text class="axis" x="{left + pw / 2}" y="{top + ph + 30}" text-anchor="middle">'
        f"{escape(xlabel)}</text>"
    )
    for i, (name, pts) in enumerate(drawn.items()):
        c = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(
            f'<polyline class="series" data-name="{escape(name)}" fill="none" stroke="{c}" '
            f'stroke-width="1.6" points="{path}"/>'
        )
        for x, y in pts:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{c}">'
                f"<title>{escape(name)}: {escape(_fmt(y))} at {escape(_fmt(x))}</title></circle>"
            )
        lx = left + (i % cols) * (pw / 2)
        ly = height + 2 + 14 * (i // cols)
        out.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="3" fill="{c}"/>')
        out.append(f'<text class="legend" x="{lx + 14:.1f}" y="{ly - 3}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _pick(metrics: Mapping[str, Sequence[Sequence[float]]], *names: str) -> dict[str, list]:
    return {n: list(metrics[n]) for n in names if n in metrics}


def _prefixed(metrics: Mapping[str, Sequence[Sequence[float]]], prefix: str) -> dict[str, list]:
    return {k: list(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def learning_curves(metrics: Mapping[str, Sequence[Sequence[float]]]) -> list[tuple[str, str]]:
    """``[(panel title, svg)]``: success overall and per task type, switch rate, mean segment
    length, invalid-turn rate, advantage variance per level, explained variance per value head,
    KL and entropy. Panels without any data are left out."""
    level = {"low": "A^L (low)", "high": "A^H (high)", "switch": "A^S (switch)"}
    variance = {
        f"Var {level.get(k.split('/')[1], k.split('/')[1])}": [[x, y * y] for x, y in v]
        for k, v in _prefixed(metrics, "adv/").items()
        if k.endswith("/std") and k.count("/") == 2
    }
    panels = [
        (
            "Success",
            {
                **_pick(metrics, "train/success", "eval/success"),
                # the other evaluation splits (start and end of a run): <split>/success
                **{
                    k: list(v)
                    for k, v in sorted(metrics.items())
                    if k.endswith("/success")
                    and k.count("/") == 1
                    and k.split("/")[0] not in ("train", "eval")
                },
            },
        ),
        (
            "Success per task type",
            {**_prefixed(metrics, "eval/success/"), **_prefixed(metrics, "train/success/")},
        ),
        ("Switch rate", _pick(metrics, "train/switch_rate", "eval/switch_rate")),
        ("Mean segment length (turns)", _pick(metrics, "train/segment_length")),
        ("Invalid-turn rate", _pick(metrics, "train/invalid_rate", "eval/invalid_rate")),
        ("Advantage variance per level", variance),
        ("Explained variance per value head", _prefixed(metrics, "ppo/explained_var/")),
        ("KL to the reference, entropy", _pick(metrics, "ppo/kl", "ppo/entropy")),
    ]
    return [(t, line_plot(t, s)) for t, s in panels if s]
