"""Monte-Carlo check of HAE's theory on a small semi-MDP whose values are known exactly.

The world: K segments of D turns each. At each boundary the policy draws a subgoal o ~ Bern(P_O);
inside a segment it draws actions a ~ Bern(PI_A1[o]) and earns R[o][a] + N(0, SIGMA^2). The
environment state is only the turn index, so the subgoal carries information the state does not.
With exact critics and lambda = 1:
- HAE is unbiased: E[A^L | t, o, a] = Q^L(t, o, a) - V^L(t, o), E[A^H | k, o] = Q^H(k, o) - V^H(k),
  and its policy-gradient estimate has the true gradient as mean;
- its gradient estimate has lower variance than flat turn-level GAE's (critic V(t), no subgoal).
"""

from __future__ import annotations

import numpy as np

from hiper.algos import TurnLayout, Values, estimate
from hiper.algos.gae import GAEConfig
from hiper.algos.hae import HAEConfig, hae_parts

K, D = 3, 2
T = K * D
GAMMA = 0.9
P_O = 0.3
PI_A1 = np.array([0.8, 0.2])  # pi(a=1 | o)
R = np.array([[0.0, 1.0], [3.0, 0.0]])  # R[o][a]
SIGMA = 0.5
N = 40_000


def true_values():
    mu = (1 - PI_A1) * R[:, 0] + PI_A1 * R[:, 1]  # expected reward per turn under subgoal o
    vh = np.zeros(K + 1)  # V^H at each boundary; vh[K] = 0 after the end
    vl = np.zeros((T, 2))  # V^L(t, o)
    for k in range(K - 1, -1, -1):
        for j in range(D - 1, -1, -1):
            t = k * D + j
            nxt = vl[t + 1] if j < D - 1 else np.full(2, vh[k + 1])
            vl[t] = mu + GAMMA * nxt
        vh[k] = (1 - P_O) * vl[k * D, 0] + P_O * vl[k * D, 1]
    # Q^L(t, o, a) = R[o][a] + gamma * (V^L(t+1, o) inside the segment, V^H at the next boundary)
    q = np.zeros((T, 2, 2))
    for t in range(T):
        k, j = divmod(t, D)
        nxt = vl[t + 1] if j < D - 1 else np.full(2, vh[k + 1])
        q[t] = R + GAMMA * nxt[:, None]
    flat_v = (1 - P_O) * vl[:, 0] + P_O * vl[:, 1]  # V(t) of the flat critic: subgoal unknown
    return vh, vl, q, flat_v


def sample(rng):
    o = (rng.random((N, K)) < P_O).astype(int)
    o_t = np.repeat(o, D, axis=1)
    a = (rng.random((N, T)) < PI_A1[o_t]).astype(int)
    r = R[o_t, a] + SIGMA * rng.normal(size=(N, T))
    return o_t, a, r


def layout_for(r):
    boundary = np.zeros((N, T), bool)
    boundary[:, ::D] = True
    return TurnLayout(
        mask=np.ones((N, T), bool),
        reward=r,
        valid=np.ones((N, T), bool),
        boundary=boundary,
        keep_mismatch=np.zeros((N, T), bool),
        switch_prob=np.full((N, T), np.nan),
        state_id=np.zeros((N, T), np.int64),
        length=np.full(N, T),
        terminated=np.ones(N, bool),
        success=np.zeros(N, bool),
        score=np.zeros(N),
        group=np.zeros(N, np.int64),
    )


def policy_gradients(adv, o_t, a):
    """Per-trajectory REINFORCE estimate for the action logits theta_o: sum_t A_t (a_t - pi1(o_t)) e_o."""
    score = a - PI_A1[o_t]
    return np.stack([(adv * score * (o_t == o)).sum(axis=1) for o in (0, 1)], axis=1)


def test_hae_is_unbiased_and_beats_flat_gae_variance_at_lambda_one():
    rng = np.random.default_rng(123)
    vh, vl, q, flat_v = true_values()
    o_t, a, r = sample(rng)
    layout = layout_for(r)
    t_idx = np.broadcast_to(np.arange(T), (N, T))
    VH = vh[np.minimum(t_idx // D, K)]  # value of the state at turn t seen at a boundary
    VL = vl[t_idx, o_t]
    cfg = HAEConfig(
        gamma=GAMMA, lam_low=1.0, lam_high=1.0, norm_adv=False, switch_advantage="segment_return"
    )
    p = hae_parts(layout, r, Values(high=VH, low=VL), cfg)

    # 1. unbiased per decision: every (t, o, a) cell's mean A^L is Q^L - V^L within 5 standard errors
    for t in range(T):
        for o in (0, 1):
            for act in (0, 1):
                sel = (o_t[:, t] == o) & (a[:, t] == act)
                x = p.low[sel, t]
                se = x.std() / np.sqrt(sel.sum())
                assert abs(x.mean() - (q[t, o, act] - vl[t, o])) < 5 * se + 1e-9, (t, o, act)
    for k in range(K):
        for o in (0, 1):
            sel = o_t[:, k * D] == o
            x = p.high[sel, k * D]
            expect = vl[k * D, o] - vh[k]  # Q^H(k, o) = V^L(b_k, o)
            assert abs(x.mean() - expect) < 5 * x.std() / np.sqrt(sel.sum()), (k, o)

    # 2. the policy-gradient estimates: both unbiased, HAE's with lower variance
    true_grad = np.zeros(2)
    p_o = np.array([1 - P_O, P_O])
    for t in range(T):
        for o in (0, 1):
            for act in (0, 1):
                pa = PI_A1[o] if act else 1 - PI_A1[o]
                true_grad[o] += p_o[o] * pa * (act - PI_A1[o]) * q[t, o, act]
    flat = estimate(
        "gae",
        layout,
        values=Values(high=flat_v[t_idx]),
        config=GAEConfig(gamma=GAMMA, lam=1.0, norm_adv=False),
    ).action
    g_hae = policy_gradients(p.low, o_t, a)
    g_flat = policy_gradients(flat, o_t, a)
    for g in (g_hae, g_flat):
        se = g.std(axis=0) / np.sqrt(N)
        assert (np.abs(g.mean(axis=0) - true_grad) < 5 * se).all(), (g.mean(axis=0), true_grad)
    var_hae = g_hae.var(axis=0).sum()
    var_flat = g_flat.var(axis=0).sum()
    assert var_hae < 0.7 * var_flat, (var_hae, var_flat)


def test_wrong_boundary_bootstrap_would_be_caught():
    """Sanity of the test itself: bootstrapping segments from V^L instead of V^H biases A^L."""
    rng = np.random.default_rng(7)
    _vh, vl, q, _ = true_values()
    o_t, a, r = sample(rng)
    layout = layout_for(r)
    t_idx = np.broadcast_to(np.arange(T), (N, T))
    VL = vl[t_idx, o_t]
    wrong_vh = VL + 1.0  # a critic whose V^H is off by one everywhere
    cfg = HAEConfig(
        gamma=GAMMA, lam_low=1.0, lam_high=1.0, norm_adv=False, switch_advantage="segment_return"
    )
    p = hae_parts(layout, r, Values(high=wrong_vh, low=VL), cfg)
    t = D - 1  # last turn of segment 0 bootstraps from V^H at turn D
    sel = (o_t[:, t] == 0) & (a[:, t] == 1)
    assert abs(p.low[sel, t].mean() - (q[t, 0, 1] - vl[t, 0]) - GAMMA * 1.0) < 0.05
