"""Shared helpers for the critic-free estimators (GRPO, RLOO, REINFORCE++, GiGPO).

Group statistics are computed with ``np.unique(..., return_inverse=True)`` + ``np.bincount``: no
Python loop over groups, trajectories or turns. Callers pass only the *real* entries (padding
selected out beforehand), so padding can never leak into a group statistic.

Conventions (fixed here, once, for every group estimator):

- the group standard deviation is the **unbiased** (N - 1) estimate, as common GRPO
  implementations use (``torch.std`` default);
- a **singleton group** has std 0 and a normalised value of 0: with a single sample there is no
  baseline to compare against, so the sample carries no learning signal rather than a spurious one
  (mean-centring gives 0 there anyway; the std branch is made to agree).
"""

from __future__ import annotations

import numpy as np


def _inverse(ids: np.ndarray) -> np.ndarray:
    """Dense group index per element; ``ids`` is [n] or [n, k] (rows are composite keys)."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
        return np.unique(ids, return_inverse=True)[1].reshape(-1)
    if ids.ndim == 2:
        return np.unique(ids, axis=0, return_inverse=True)[1].reshape(-1)
    raise ValueError(f"group ids must be [n] or [n, k], got shape {ids.shape}")


def group_mean_std(x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-element (group mean, unbiased group std, group size), each of shape [n].

    ``ids`` is [n] (one id per element) or [n, k] (a composite key per element, e.g. the
    ``(episode group, state id)`` anchors of GiGPO). The std uses N - 1 in the denominator; a
    singleton group has std 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be one-dimensional, got shape {x.shape}")
    if x.size == 0:
        empty = np.zeros(0)
        return empty, empty.copy(), np.zeros(0, np.int64)
    inv = _inverse(ids)
    if inv.shape[0] != x.shape[0]:
        raise ValueError(f"ids give {inv.shape[0]} elements, x has {x.shape[0]}")
    count = np.bincount(inv)
    mean = np.bincount(inv, weights=x) / count
    dev = x - mean[inv]
    ss = np.bincount(inv, weights=dev * dev, minlength=count.size)
    var = np.divide(ss, count - 1, out=np.zeros_like(ss), where=count > 1)
    std = np.sqrt(var)
    return mean[inv], std[inv], count[inv]


def normalize_in_groups(
    x: np.ndarray, ids: np.ndarray, use_std: bool, eps: float = 1e-6
) -> np.ndarray:
    """``(x - group mean) / (group std + eps)``, or ``x - group mean`` when ``use_std`` is False.

    Singleton groups give exactly 0 (no baseline exists for a single sample).
    """
    mean, std, count = group_mean_std(x, ids)
    out = np.asarray(x, dtype=np.float64) - mean
    if use_std:
        out = out / (std + eps)
    return np.where(count > 1, out, 0.0)


def discounted_returns(rewards: np.ndarray, mask: np.ndarray, gamma: float) -> np.ndarray:
    """Return-to-go ``G_t = sum_{j >= t} gamma^(j - t) r_j`` within each trajectory, [B, T].

    Backward recursion over the turn axis, vectorised over trajectories; padding entries (``mask``
    False) contribute nothing and get 0.
    """
    r = np.where(mask, np.asarray(rewards, dtype=np.float64), 0.0)
    out = np.zeros_like(r)
    running = np.zeros(r.shape[0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = np.where(mask[:, t], r[:, t] + gamma * running, 0.0)
        out[:, t] = running
    return out
