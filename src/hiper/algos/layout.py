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
from hiper.protocol.segments import is_boundary, next_subgoal
from hiper.types import Trajectory


@dataclass(frozen=True)
class TurnLayout:
    """Per-turn arrays of shape [B, T] and per-trajectory arrays of shape [B]."""

    mask: np.ndarray  # bool [B,T]: a real turn
    reward: np.ndarray  # float64 [B,T]: raw environment reward
    valid: np.ndarray  # bool [B,T]: the parser's verdict
    boundary: np.ndarray  # bool [B,T]: q_t (turn 0 always True)
    keep_mismatch: np.ndarray  # bool [B,T]: KEEP turn whose subgoal text differs from o_{t-1}
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
    mask = np.zeros((B, T), bool)
    reward = np.zeros((B, T))
    valid = np.zeros((B, T), bool)
    boundary = np.zeros((B, T), bool)
    keep_mismatch = np.zeros((B, T), bool)
    switch_prob = np.full((B, T), np.nan)
    state_id = np.full((B, T), -1, np.int64)
    length = np.zeros(B, np.int64)
    terminated = np.zeros(B, bool)
    success = np.zeros(B, bool)
    score = np.zeros(B)
    group = np.zeros(B, np.int64)
    states: dict[str, int] = {}
    groups: dict[str, int] = {}
    for b, tr in enumerate(trajectories):
        if not tr.turns:
            raise ValueError(f"trajectory {b} (task {tr.task_id!r}) has no turns")
        n = len(tr.turns)
        length[b] = n
        terminated[b] = tr.turns[-1].terminated
        success[b] = tr.success
        score[b] = tr.score
        group[b] = groups.setdefault(str(tr.group_id), len(groups))
        current: str | None = None
        for t, turn in enumerate(tr.turns):
            d = turn.decision
            reward[b, t] = turn.reward
            valid[b, t] = d.valid
            q = is_boundary(d, t)
            boundary[b, t] = q
            if not q and d.subgoal is not None:
                keep_mismatch[b, t] = normalize_subgoal(d.subgoal) != normalize_subgoal(current)
            if turn.switch_prob is not None:
                switch_prob[b, t] = turn.switch_prob
            state_id[b, t] = states.setdefault(turn.observation, len(states))
            current = next_subgoal(current, d, t)
        mask[b, :n] = True
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
