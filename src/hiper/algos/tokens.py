"""Spread per-turn advantages onto response tokens and place value targets (HAE.md §5).

| tokens            | advantage                    | trained on                    |
|-------------------|------------------------------|-------------------------------|
| switch block      | ``switch`` (A^S)             | ``switch_on`` turns           |
| subgoal block     | ``subgoal`` (A^H)            | ``subgoal_on`` (boundary) turns |
| everything else   | ``action`` (A^L)             | every turn                    |

Rows are the real turns of the layout in row-major (trajectory, turn) order, matching the rows of
:class:`hiper.protocol.masks.TokenSpans`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiper.algos.base import TurnAdvantages
from hiper.algos.layout import TurnLayout
from hiper.protocol.masks import BLOCK_INDEX, BLOCKS, TokenSpans

SWITCH_LABEL = 1 + BLOCK_INDEX["switch"]
SUBGOAL_LABEL = 1 + BLOCK_INDEX["subgoal"]


@dataclass(frozen=True)
class TokenAdvantages:
    offsets: np.ndarray  # int64 [N+1]: row i's tokens are offsets[i]:offsets[i+1]
    advantages: np.ndarray  # float32 [total]
    loss_mask: np.ndarray  # bool [total]


@dataclass(frozen=True)
class TurnValueTargets:
    """Per head: the turns (row indices), response positions and targets to regress on."""

    rows: np.ndarray  # int64 [M]
    positions: np.ndarray  # int64 [M]
    targets: np.ndarray  # float32 [M]


def _rows(layout: TurnLayout, spans: TokenSpans) -> tuple[np.ndarray, np.ndarray]:
    n = len(spans.offsets) - 1
    bi, ti = np.nonzero(layout.mask)
    if bi.size != n:
        raise ValueError(
            f"token spans have {n} rows but the layout has {bi.size} real turns; "
            "align the responses of exactly the layout's turns, in trajectory order"
        )
    return bi, ti


def token_advantages(layout: TurnLayout, adv: TurnAdvantages, spans: TokenSpans) -> TokenAdvantages:
    bi, ti = _rows(layout, spans)
    n = bi.size
    # per turn, the advantage and the trained flag of each label: other, switch, subgoal, action, think
    a_low = adv.action[bi, ti]
    table = np.empty((n, 1 + len(BLOCKS)))
    table[:] = a_low[:, None]
    table[:, SWITCH_LABEL] = adv.switch[bi, ti]
    table[:, SUBGOAL_LABEL] = adv.subgoal[bi, ti]
    on = np.ones((n, 1 + len(BLOCKS)), bool)
    on[:, SWITCH_LABEL] = adv.switch_on[bi, ti]
    on[:, SUBGOAL_LABEL] = adv.subgoal_on[bi, ti]
    table[~on] = 0.0
    row, lab = spans.row_of, spans.labels
    return TokenAdvantages(spans.offsets, table[row, lab].astype(np.float32), on[row, lab])


def turn_value_targets(
    layout: TurnLayout, adv: TurnAdvantages, positions: dict[str, np.ndarray], spans: TokenSpans
) -> dict[str, TurnValueTargets]:
    """Gather every head's targets at its response positions (several targets may share a head)."""
    bi, ti = _rows(layout, spans)
    out: dict[str, list[TurnValueTargets]] = {}
    for vt in adv.targets:
        w = vt.weight[bi, ti]
        rows = np.nonzero(w)[0]
        out.setdefault(vt.head, []).append(
            TurnValueTargets(
                rows, positions[vt.position][rows], vt.target[bi, ti][rows].astype(np.float32)
            )
        )
    return {
        head: TurnValueTargets(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.positions for p in parts]),
            np.concatenate([p.targets for p in parts]),
        )
        for head, parts in out.items()
    }
