"""Pack trajectories into the padded (trajectory x turn) layout every estimator works on.

Advantages are computed on whole trajectories, *before* any batching, padding or rebalancing for
the trainer (the original implementation duplicated rows to pad batches and then counted them as
extra turns). Padding rows/columns carry ``mask == False`` and never influence any statistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from hiper.protocol.parser import normalize_subgoal
from hiper.protocol.segments import is_boundary
from hiper.types import Trajectory


@dataclass(frozen=True)
class TurnLayout:
    """Per-turn arrays of shape [B, T] and per-trajectory arrays of shape [B]."""

    mask: np.ndarray  # bool [B,T]: a real turn
    reward: np.ndarray  # float64 [B,T]: raw environment reward
    valid: np.ndarray  # bool [B,T]: the parser's verdict
    boundary: np.ndarray  # bool [B,T]: q_t (turn 0 always True)
    keep_mismatch: np.ndarray  # bool [B,T]: KEEP turn whose subgoal text differs from the
    # text written on the previous turn (that wrote one), compared normalised
    switch_prob: np.ndarray  # float64 [B,T]: beta_t, NaN where the engine gave none
    state_id: np.ndarray  # int64 [B,T]: equal ids <=> equal observation text (GiGPO anchors)
    length: np.ndarray  # int64 [B]
    terminated: np.ndarray  # bool [B]: the episode really ended on its last turn
    success: np.ndarray  # bool [B]
    score: np.ndarray  # float64 [B]
    group: np.ndarray  # int64 [B]: rollout group (same task) for group estimators; -1 on padding

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @property
    def truncated(self) -> np.ndarray:
        """A real trajectory that did not terminate was cut (time limit, lost worker)."""
        return (self.length > 0) & ~self.terminated

    @property
    def last(self) -> np.ndarray:
        """bool [B,T]: the last real turn of each trajectory."""
        t = np.arange(self.shape[1])
        return t[None, :] == (self.length[:, None] - 1)

    def pad(self, rows: int = 0, cols: int = 0) -> TurnLayout:
        """Append empty trajectories and/or turn columns (masked out everywhere)."""
        fill = {"state_id": -1, "group": -1, "switch_prob": np.nan}
        out = {}
        for f in fields(self):
            a = getattr(self, f.name)
            width = ((0, rows), (0, cols)) if a.ndim == 2 else ((0, rows),)
            out[f.name] = np.pad(a, width, constant_values=fill.get(f.name, 0))
        return replace(self, **out)

    def take(self, rows: np.ndarray) -> TurnLayout:
        """Rows in the given order (permute, subset or duplicate trajectories)."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def build_layout(trajectories: Sequence[Trajectory], min_turns: int = 0) -> TurnLayout:
    """Lay ``trajectories`` out as [B, T] arrays (T = the longest, at least ``min_turns``)."""
    if not trajectories:
        raise ValueError("build_layout needs at least one trajectory, got an empty sequence")
    B = len(trajectories)
    T = max(max(len(tr.turns) for tr in trajectories), min_turns, 1)
    length = np.fromiter((len(tr.turns) for tr in trajectories), np.int64, B)
    if (length == 0).any():
        b = int(np.argmin(length))
        raise ValueError(f"trajectory {b} (task {trajectories[b].task_id!r}) has no turns")
    mask = np.arange(T)[None, :] < length[:, None]
    # gather flat per-turn lists in row-major order, then scatter once into [B, T]
    reward_l, valid_l, boundary_l, mismatch_l, prob_l, state_l = [], [], [], [], [], []
    states: dict[str, int] = {}
    groups: dict[str, int] = {}
    for tr in trajectories:
        # the keep-consistency rule of the original runs: a KEEP turn is judged against the
        # subgoal text written on the turn before it (the latest turn that wrote one), not the
        # one set at the last SWITCH, so a KEEP that copies an earlier drift is consistent
        written: str | None = None
        written_norm = ""
        for t, turn in enumerate(tr.turns):
            d = turn.decision
            reward_l.append(turn.reward)
            valid_l.append(d.valid)
            q = is_boundary(d, t)
            boundary_l.append(q)
            sg = d.subgoal
            if sg is not None and sg != written:
                norm = normalize_subgoal(sg)
                mismatch_l.append(not q and written is not None and norm != written_norm)
                written, written_norm = sg, norm
            else:
                mismatch_l.append(False)
            prob_l.append(np.nan if turn.switch_prob is None else turn.switch_prob)
            state_l.append(states.setdefault(turn.observation, len(states)))

    def scatter(values: list, dtype, fill) -> np.ndarray:
        out = np.full((B, T), fill, dtype)
        out[mask] = np.asarray(values, dtype)
        return out

    reward = scatter(reward_l, np.float64, 0.0)
    valid = scatter(valid_l, bool, False)
    boundary = scatter(boundary_l, bool, False)
    keep_mismatch = scatter(mismatch_l, bool, False)
    switch_prob = scatter(prob_l, np.float64, np.nan)
    state_id = scatter(state_l, np.int64, -1)
    terminated = np.fromiter((tr.turns[-1].terminated for tr in trajectories), bool, B)
    success = np.fromiter((tr.success for tr in trajectories), bool, B)
    score = np.fromiter((tr.score for tr in trajectories), np.float64, B)
    group = np.fromiter(
        (groups.setdefault(str(tr.group_id), len(groups)) for tr in trajectories), np.int64, B
    )
    return TurnLayout(
        mask=mask,
        reward=reward,
        valid=valid,
        boundary=boundary,
        keep_mismatch=keep_mismatch,
        switch_prob=switch_prob,
        state_id=state_id,
        length=length,
        terminated=terminated,
        success=success,
        score=score,
        group=group,
    )


def masked_standardize(x: np.ndarray, where: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(x - mean) / (std + eps) over the entries selected by ``where``; 0 elsewhere."""
    n = int(where.sum())
    if n == 0:
        return np.zeros_like(x)
    sel = x[where]
    mean = sel.mean()
    std = sel.std()
    return np.where(where, (x - mean) / (std + eps), 0.0)
