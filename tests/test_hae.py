"""HAE: a multi-segment case worked out by hand, truncation, both switch variants, invariants."""

from __future__ import annotations

import numpy as np
import pytest

from hiper.algos import Values, build_layout, estimate
from hiper.algos.gae import GAEConfig
from hiper.algos.hae import HAEConfig, hae_parts
from tests.helpers import random_trajectories, trajectory

# One trajectory, 5 turns, boundaries at t = 0, 2, 3 -> segments [0,1], [2], [3,4].
SWITCHES = ["SWITCH", "KEEP", "SWITCH", "SWITCH", "KEEP"]
REWARDS = [0.0, 1.0, 0.0, 0.0, 2.0]
VH = [1.0, 0.5, 2.0, 1.5, 0.7]
VL = [0.8, 1.2, 1.9, 1.0, 1.8]
CFG = HAEConfig(
    gamma=0.9, lam_low=0.5, lam_high=0.8, norm_adv=False, switch_advantage="segment_return"
)


def one(terminated=True, **kw):
    tr = trajectory(SWITCHES, REWARDS, terminated=terminated, **kw)
    return build_layout([tr])


def vals(prev=None, final=None):
    return Values(
        high=np.array([VH]),
        low=np.array([VL]),
        prev=None if prev is None else np.array([prev]),
        final=None if final is None else np.array([final]),
    )


def test_hand_computed_multi_segment():
    layout = one()
    assert layout.boundary[0].tolist() == [True, False, True, True, False]
    p = hae_parts(layout, layout.reward, vals(), CFG)
    # Low level (gamma .9, lam_L .5), never across a boundary:
    #   t1 ends segment 0, bootstraps V^H_2:  d1 = 1 + .9*2.0 - 1.2 = 1.6          A1 = 1.6
    #   t0:                                   d0 = 0 + .9*1.2 - .8  = .28          A0 = .28 + .45*1.6 = 1.0
    #   t2 alone, bootstraps V^H_3:           d2 = .9*1.5 - 1.9     = -.55         A2 = -.55
    #   t4 terminates:                        d4 = 2 - 1.8          = .2           A4 = .2
    #   t3:                                   d3 = .9*1.8 - 1.0     = .62          A3 = .62 + .45*.2 = .71
    np.testing.assert_allclose(p.low[0], [1.0, 1.6, -0.55, 0.71, 0.2])
    np.testing.assert_allclose(p.low_return[0], [1.8, 2.8, 1.35, 1.71, 2.0])
    # High level (SMDP): G_{b} = discounted in-segment reward + gamma^d * next V^H (0 after the end)
    #   G0 = 0 + .9*1 + .81*2.0 = 2.52 ; G2 = .9*1.5 = 1.35 ; G3 = 0 + .9*2 = 1.8
    #   dH = [2.52-1, 1.35-2, 1.8-1.5] = [1.52, -.65, .3]
    #   AH3 = .3 ; AH2 = -.65 + .9*.8*.3 = -.434 ; AH0 = 1.52 + .81*.8*(-.434) = 1.238768
    np.testing.assert_allclose(p.high[0], [1.238768, 0.0, -0.434, 0.3, 0.0])
    np.testing.assert_allclose(p.high_return[0], [2.238768, 0.0, 1.566, 1.8, 0.0])
    np.testing.assert_allclose(p.seg_return[0], [2.52, 2.8, 1.35, 1.8, 2.0])


def test_switch_variants_by_hand():
    layout = one()
    vterm = [0.5, 2.0, 1.0, 1.0, 1.5]
    adv = estimate("hae", layout, values=vals(prev=vterm), config=CFG)
    # segment_return: A^S = G - V^term, never on turn 0
    np.testing.assert_allclose(adv.switch[0], [0.0, 0.8, 0.35, 0.8, 0.5])
    assert adv.switch_on[0].tolist() == [False, True, True, True, True]
    heads = {(t.head, t.position) for t in adv.targets}
    assert heads == {("high", "start"), ("low", "after_subgoal"), ("term", "start")}
    term = next(t for t in adv.targets if t.head == "term")
    np.testing.assert_allclose(term.target[0], [2.52, 2.8, 1.35, 1.8, 2.0])

    # gain: A^S = (q - beta)(V^H - V^P)
    layout = one(switch_probs=[0.5, 0.2, 0.6, 0.3, 0.4])
    vp = [0.9, 0.4, 1.0, 2.0, 0.2]
    cfg = HAEConfig(gamma=0.9, lam_low=0.5, lam_high=0.8, norm_adv=False, switch_advantage="gain")
    adv = estimate("hae", layout, values=vals(prev=vp), config=cfg)
    # t1 (0-.2)(.5-.4) = -.02 ; t2 (1-.6)(2-1) = .4 ; t3 (1-.3)(1.5-2) = -.35 ; t4 (0-.4)(.7-.2) = -.2
    np.testing.assert_allclose(adv.switch[0], [0.0, -0.02, 0.4, -0.35, -0.2])
    # V^P (low head at position 0) learns R^L on KEEP turns only (there o_t = o_{t-1})
    low_start = next(t for t in adv.targets if t.head == "low" and t.position == "start")
    assert low_start.weight[0].tolist() == [False, True, False, False, True]
    np.testing.assert_allclose(low_start.target[0][[1, 4]], [2.8, 2.0])
    # subgoal advantages only on boundaries
    assert adv.subgoal_on[0].tolist() == [True, False, True, True, False]


def test_gain_needs_switch_probabilities():
    with pytest.raises(ValueError, match="switch_prob"):
        estimate(
            "hae", one(), values=vals(prev=[0.0] * 5), config=HAEConfig(switch_advantage="gain")
        )


def test_truncation_bootstraps_from_the_final_state_not_itself():
    cfg = CFG
    p = hae_parts(one(terminated=False), np.array([REWARDS]), vals(final=3.0), cfg)
    # t4 was cut by the time limit: d4 = 2 + .9*3.0 - 1.8 = 2.9 ; A3 = .62 + .45*2.9 = 1.925
    np.testing.assert_allclose(p.low[0][[3, 4]], [1.925, 2.9])
    # segment [3,4]: G3 = .9*(2 + .9*3) = 4.23 ; AH3 = 4.23 - 1.5 = 2.73
    np.testing.assert_allclose(p.high[0][3], 2.73)
    # the bootstrap uses V^H(s_T), never the last turn's own value: changing V^H_4 changes nothing
    v2 = Values(high=np.array([[*VH[:4], 99.0]]), low=np.array([VL]), final=np.array([3.0]))
    np.testing.assert_allclose(
        hae_parts(one(terminated=False), np.array([REWARDS]), v2, cfg).low, p.low
    )
    # bootstrapping off: the cut episode is treated as worth 0 afterwards (same as terminated here)
    off = HAEConfig(**{**CFG.__dict__, "truncation_bootstrap": False})
    p_off = hae_parts(one(terminated=False), np.array([REWARDS]), vals(), off)
    p_term = hae_parts(one(), np.array([REWARDS]), vals(), CFG)
    np.testing.assert_allclose(p_off.low, p_term.low)
    with pytest.raises(ValueError, match=r"values\.final"):
        hae_parts(one(terminated=False), np.array([REWARDS]), vals(), CFG)


def test_all_switch_reduces_to_flat_turn_level_gae():
    rng = np.random.default_rng(0)
    trajs = []
    for i in range(12):
        n = int(rng.integers(1, 10))
        trajs.append(
            trajectory(
                ["SWITCH"] * n, list(rng.normal(size=n)), terminated=bool(i % 2), task_id=f"x{i}"
            )
        )
    layout = build_layout(trajs)
    vh = rng.normal(size=layout.shape)
    vl = rng.normal(size=layout.shape)
    final = rng.normal(size=layout.shape[0])
    g, lam_h = 0.95, 0.7
    cfg = HAEConfig(
        gamma=g, lam_low=0.3, lam_high=lam_h, norm_adv=False, switch_advantage="segment_return"
    )
    p = hae_parts(layout, layout.reward, Values(high=vh, low=vl, final=final), cfg)
    flat = estimate(
        "gae",
        layout,
        values=Values(high=vh, final=final),
        config=GAEConfig(gamma=g, lam=lam_h, norm_adv=False),
    )
    np.testing.assert_allclose(p.high, flat.action, atol=1e-12)
    # the low level collapses to one-step TD errors against V^L, bootstrapping from V^H
    td = estimate(
        "gae",
        layout,
        values=Values(high=vl, final=final),
        config=GAEConfig(gamma=g, lam=0.0, norm_adv=False),
    )
    vh_next = np.zeros_like(vh)
    vh_next[:, :-1] = vh[:, 1:]
    vl_next = np.zeros_like(vl)
    vl_next[:, :-1] = vl[:, 1:]
    shift = np.where(layout.mask & ~layout.last, g * (vh_next - vl_next), 0.0)
    np.testing.assert_allclose(p.low, td.action + shift, atol=1e-12)
    # and with V^L == V^H it IS flat GAE with lambda 0
    p_same = hae_parts(layout, layout.reward, Values(high=vh, low=vh, final=final), cfg)
    td_h = estimate(
        "gae",
        layout,
        values=Values(high=vh, final=final),
        config=GAEConfig(gamma=g, lam=0.0, norm_adv=False),
    )
    np.testing.assert_allclose(p_same.low, td_h.action, atol=1e-12)


def _values_for(layout, seed):
    rng = np.random.default_rng(seed)
    B, T = layout.shape
    return Values(
        high=rng.normal(size=(B, T)),
        low=rng.normal(size=(B, T)),
        prev=rng.normal(size=(B, T)),
        final=rng.normal(size=B),
    )


@pytest.mark.parametrize("variant", ["gain", "segment_return"])
def test_shuffling_padding_duplicating_rows_never_changes_a_trajectory(variant):
    rng = np.random.default_rng(1)
    trajs = random_trajectories(rng, 20)
    layout = build_layout(trajs)
    v = _values_for(layout, 2)
    raw = HAEConfig(norm_adv=False, switch_advantage=variant)
    base = estimate("hae", layout, values=v, config=raw)

    def sub(values, rows, cols=None):
        def f(x):
            if x is None:
                return None
            y = x[rows]
            return y if cols is None or y.ndim == 1 else np.pad(y, ((0, 0), (0, cols)))

        return Values(f(values.high), f(values.low), f(values.prev), f(values.final))

    # shuffle the trajectory list itself (the real pipeline path) and permute values alike
    perm = rng.permutation(len(trajs))
    shuffled = estimate(
        "hae", build_layout([trajs[i] for i in perm]), values=sub(v, perm), config=raw
    )
    # duplicate rows (as batch balancing would) and pad with empty rows and columns
    dup = np.concatenate([np.arange(len(trajs)), [0, 0, 5]])
    padded_layout = layout.take(dup).pad(rows=4, cols=3)
    pv = sub(v, np.concatenate([dup, [0, 0, 0, 0]]), cols=3)
    padded = estimate("hae", padded_layout, values=pv, config=raw)
    for name in ("action", "subgoal", "switch", "subgoal_on", "switch_on"):
        a = getattr(base, name)
        np.testing.assert_array_equal(getattr(shuffled, name), a[perm])
        np.testing.assert_array_equal(getattr(padded, name)[: len(dup), : a.shape[1]], a[dup])
        assert not getattr(padded, name)[len(dup) :].any()
        assert not getattr(padded, name)[:, a.shape[1] :].any()
    # with standardisation, padding rows/columns change no statistic
    normed = estimate("hae", layout, values=v, config=HAEConfig(switch_advantage=variant))
    padded_n = estimate(
        "hae",
        layout.pad(rows=5, cols=2),
        values=sub(v, np.r_[np.arange(20), [0] * 5], cols=2),
        config=HAEConfig(switch_advantage=variant),
    )
    np.testing.assert_allclose(padded_n.action[:20, : layout.shape[1]], normed.action, atol=1e-12)
    np.testing.assert_allclose(padded_n.subgoal[:20, : layout.shape[1]], normed.subgoal, atol=1e-12)
    # standardised per type: mean 0, std 1 over the turns each type applies to
    np.testing.assert_allclose(normed.action[layout.mask].mean(), 0.0, atol=1e-9)
    np.testing.assert_allclose(normed.subgoal[normed.subgoal_on].std(), 1.0, atol=1e-6)
    np.testing.assert_allclose(normed.switch[normed.switch_on].std(), 1.0, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="lam_high must be in"):
        HAEConfig(lam_high=1.5)
    with pytest.raises(ValueError, match="switch_advantage must be one of"):
        HAEConfig(switch_advantage="bogus")
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        estimate("nope", one())
    with pytest.raises(TypeError, match="takes a HAEConfig"):
        estimate("hae", one(), values=vals(), config=GAEConfig())
    with pytest.raises(ValueError, match=r"values\.low"):
        estimate("hae", one(), values=Values(high=np.array([VH])), config=CFG)


def test_flat_turn_level_gae_by_hand():
    tr = trajectory(["SWITCH", "SWITCH", "SWITCH"], [0.0, 1.0, 2.0])
    v = Values(high=np.array([[0.5, 1.0, 1.5]]), final=np.array([2.0]))
    cfg = GAEConfig(gamma=0.9, lam=0.8, norm_adv=False)
    adv = estimate("gae", build_layout([tr]), values=v, config=cfg)
    # d2 = 2 - 1.5 = .5 ; d1 = 1 + .9*1.5 - 1 = 1.35 ; d0 = .9*1 - .5 = .4 ; gamma*lam = .72
    # A2 = .5 ; A1 = 1.35 + .72*.5 = 1.71 ; A0 = .4 + .72*1.71 = 1.6312
    np.testing.assert_allclose(adv.action[0], [1.6312, 1.71, 0.5])
    np.testing.assert_allclose(adv.targets[0].target[0], [2.1312, 2.71, 2.0])
    # truncated instead: bootstrap from V(s_T) = 2 -> d2 = 2 + .9*2 - 1.5 = 2.3
    cut = trajectory(["SWITCH", "SWITCH", "SWITCH"], [0.0, 1.0, 2.0], terminated=False)
    adv = estimate("gae", build_layout([cut]), values=v, config=cfg)
    np.testing.assert_allclose(adv.action[0], [0.4 + 0.72 * 3.006, 3.006, 2.3])
