"""Critic-free group estimators (GRPO, RLOO, REINFORCE++, GiGPO) against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hiper.algos import build_layout, estimate
from hiper.algos.gigpo import GiGPOConfig
from hiper.algos.groups import group_mean_std, normalize_in_groups
from hiper.algos.grpo import GRPOConfig
from hiper.algos.reinforce_pp import ReinforcePPConfig
from hiper.algos.rloo import RLOOConfig
from hiper.types import Decision, Trajectory, Turn

DEC = Decision(format="plan_execute", switch="SWITCH", subgoal="s", action="a", valid=True)
GROUP_ESTIMATORS = ["grpo", "rloo", "reinforce_pp", "gigpo"]


def traj(group: str, rewards: list[float], obs: list[str] | None = None) -> Trajectory:
    obs = obs or [f"{group}-obs{t}" for t in range(len(rewards))]
    turns = [
        Turn(observation=o, response_text="r", decision=DEC, reward=r)
        for o, r in zip(obs, rewards, strict=True)
    ]
    turns[-1].terminated = True
    return Trajectory(task_id=group, turns=turns)


def real_values(adv: np.ndarray, layout) -> list[list[float]]:
    return [list(adv[b, : layout.length[b]]) for b in range(layout.shape[0])]


def assert_rows(adv: np.ndarray, layout, expected: list[list[float]], tol: float = 1e-5) -> None:
    got = real_values(adv, layout)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=tol)
    assert np.all(adv[~layout.mask] == 0.0)


# ---------------------------------------------------------------- helpers


def test_group_mean_std_unbiased_and_singletons():
    x = np.array([1.0, 0.0, 0.0, 1.0, 5.0])
    ids = np.array([7, 7, 7, 7, 3])
    mean, std, count = group_mean_std(x, ids)
    # group 7: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3; group 3 (singleton): std 0
    assert mean == pytest.approx([0.5, 0.5, 0.5, 0.5, 5.0])
    assert std == pytest.approx([math.sqrt(1 / 3)] * 4 + [0.0])
    assert list(count) == [4, 4, 4, 4, 1]
    z = normalize_in_groups(x, ids, use_std=True)
    assert z == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025, 0.0], abs=1e-5)
    c = normalize_in_groups(x, ids, use_std=False)
    assert c == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0])


def test_group_ids_composite_keys():
    x = np.array([1.0, 3.0, 10.0, 20.0])
    ids = np.array([[0, 5], [0, 5], [1, 5], [0, 6]])  # (group, state): rows 0,1 together only
    mean, _, count = group_mean_std(x, ids)
    assert list(mean) == [2.0, 2.0, 10.0, 20.0]
    assert list(count) == [2, 2, 1, 1]


# ---------------------------------------------------------------- GRPO


def grpo_batch() -> list[Trajectory]:
    # group "a" outcomes (sums) [1, 0, 0, 1] with varying lengths
    return [traj("a", [0.0, 1.0]), traj("a", [0.0]), traj("a", [0.0, 0.0, 0.0]), traj("a", [1.0])]


def test_grpo_hand_computed():
    layout = build_layout(grpo_batch())
    out = estimate("grpo", layout)
    # mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.577350; 0.5 / 0.577350 = 0.866025
    p, m = 0.866025, -0.866025
    assert_rows(out.action, layout, [[p, p], [m], [m, m, m], [p]])
    np.testing.assert_array_equal(out.subgoal, out.action)
    np.testing.assert_array_equal(out.switch, out.action)
    # stats over the 7 real turns: (3 * 0.866025 - 4 * 0.866025) / 7 = -0.123718
    assert out.stats["adv/grpo/mean"] == pytest.approx(-0.123718, abs=1e-5)


def test_grpo_mean_only():
    layout = build_layout(grpo_batch())
    out = estimate("grpo", layout, config=GRPOConfig(norm_by_std=False))
    # R - mean = [0.5, -0.5, -0.5, 0.5]
    assert_rows(out.action, layout, [[0.5, 0.5], [-0.5], [-0.5, -0.5, -0.5], [0.5]])


def test_grpo_uses_given_rewards():
    layout = build_layout(grpo_batch())
    rewards = np.zeros(layout.shape)
    rewards[1, 0] = (
        3.0  # outcomes [0, 3, 0, 0]: mean 0.75, unbiased var = (3*0.5625 + 5.0625)/3 = 2.25
    )
    out = estimate("grpo", layout, rewards=rewards)
    # (3 - 0.75) / 1.5 = 1.5 ; (0 - 0.75) / 1.5 = -0.5
    assert_rows(out.action, layout, [[-0.5, -0.5], [1.5], [-0.5, -0.5, -0.5], [-0.5]])


# ---------------------------------------------------------------- RLOO


def test_rloo_hand_computed():
    batch = [*grpo_batch(), traj("b", [3.0]), traj("b", [0.0, 0.0]), traj("b", [0.0])]
    layout = build_layout(batch)
    out = estimate("rloo", layout, config=RLOOConfig())
    # group a, outcomes [1, 0, 0, 1]: 1 - (0 + 0 + 1) / 3 = 2/3 ; 0 - (1 + 0 + 1) / 3 = -2/3
    # group b, outcomes [3, 0, 0]: 3 - (0 + 0) / 2 = 3 ; 0 - (3 + 0) / 2 = -1.5
    a, b = 2 / 3, -2 / 3
    assert_rows(out.action, layout, [[a, a], [b], [b, b, b], [a], [3.0], [-1.5, -1.5], [-1.5]])


# ---------------------------------------------------------------- REINFORCE++


def test_reinforce_pp_gamma_half():
    layout = build_layout([traj("a", [1.0, 0.0, 2.0]), traj("b", [0.0, 4.0])])
    out = estimate("reinforce_pp", layout, config=ReinforcePPConfig(gamma=0.5))
    # returns: traj0 G2 = 2, G1 = 0 + 0.5*2 = 1, G0 = 1 + 0.5*1 = 1.5 ; traj1 G1 = 4, G0 = 0 + 0.5*4 = 2
    # all real [1.5, 1, 2, 2, 4]: mean 2.1, deviations [-0.6, -1.1, -0.1, -0.1, 1.9]
    # population var = (0.36 + 1.21 + 0.01 + 0.01 + 3.61) / 5 = 1.04, std = 1.019804
    s = math.sqrt(1.04)
    assert s == pytest.approx(1.019804, abs=1e-6)
    assert_rows(
        out.action,
        layout,
        [[-0.588348, -1.078638, -0.098058], [-0.098058, 1.863106]],
    )


def test_reinforce_pp_gamma_one_is_suffix_sum():
    layout = build_layout([traj("a", [1.0, 1.0]), traj("a", [0.0, 0.0])])
    out = estimate("reinforce_pp", layout)
    # returns [2, 1] and [0, 0]: mean 0.75, pop var = (1.5625 + 0.0625 + 2*0.5625) / 4 = 0.6875
    sd = math.sqrt(0.6875)  # 0.829156
    assert_rows(out.action, layout, [[1.25 / sd, 0.25 / sd], [-0.75 / sd, -0.75 / sd]])


# ---------------------------------------------------------------- GiGPO


def gigpo_batch(group: str = "g") -> list[Trajectory]:
    # the anchor "x" is visited at step 1 by A and at step 2 by B; "s0" by all three at step 0
    return [
        traj(group, [0.0, 1.0], ["s0", "x"]),  # A: G = [0.5, 1], R = 1
        traj(group, [0.0, 0.0, 0.5], ["s0", "y", "x"]),  # B: G = [0.125, 0.25, 0.5], R = 0.5
        traj(group, [0.0, 0.0], ["s0", "z"]),  # C: G = [0, 0], R = 0
    ]


# A^E: R = [1, 0.5, 0], mean 0.5, unbiased var = (0.25 + 0 + 0.25) / 2 = 0.25 -> A^E = [1, 0, -1]
# A^S "s0": G = [1/2, 1/8, 0], mean 5/24, dev [7, -2, -5]/24, unbiased var = 78/576/2 = 39/576,
#           std = sqrt(39)/24 -> [7, -2, -5]/sqrt(39) = [1.120897, -0.320256, -0.800641]
# A^S "x": G = [1, 0.5] -> [+0.707107, -0.707107] ; "y", "z": singletons -> 0
GIGPO_EXPECTED = [
    [1 + 1.120897, 1 + 0.707107],
    [0 - 0.320256, 0.0, 0 - 0.707107],
    [-1 - 0.800641, -1.0],
]


def test_gigpo_hand_computed():
    layout = build_layout(gigpo_batch())
    out = estimate("gigpo", layout, config=GiGPOConfig(gamma=0.5, omega=1.0))
    assert_rows(out.action, layout, GIGPO_EXPECTED)


def test_gigpo_mean_only_and_omega():
    layout = build_layout(gigpo_batch())
    out = estimate("gigpo", layout, config=GiGPOConfig(gamma=0.5, omega=0.5, norm="mean"))
    # A^E = R - 0.5 = [0.5, 0, -0.5]; A^S "s0" = [7, -2, -5]/24, "x" = [0.25, -0.25]
    expected = [
        [0.5 + 0.5 * 7 / 24, 0.5 + 0.5 * 0.25],  # [0.645833, 0.625]
        [0.5 * -2 / 24, 0.0, 0.5 * -0.25],  # [-0.041667, 0, -0.125]
        [-0.5 + 0.5 * -5 / 24, -0.5],  # [-0.604167, -0.5]
    ]
    assert_rows(out.action, layout, expected)
    assert expected[0][0] == pytest.approx(0.645833, abs=1e-6)


def test_gigpo_omega_zero_is_grpo():
    layout = build_layout(gigpo_batch())
    g = estimate("gigpo", layout, config=GiGPOConfig(gamma=0.5, omega=0.0))
    r = estimate("grpo", layout)
    np.testing.assert_allclose(g.action, r.action, atol=1e-12)


def test_gigpo_anchors_do_not_cross_groups():
    # same observation texts in another episode group: anchors must stay per group
    batch = [*gigpo_batch("g"), *gigpo_batch("h")]
    batch[3].turns[1].reward = 7.0  # change group h only
    layout = build_layout(batch)
    out = estimate("gigpo", layout, config=GiGPOConfig(gamma=0.5))
    assert_rows(out.action[:3], layout.take(np.arange(3)), GIGPO_EXPECTED)


# ---------------------------------------------------------------- invariants


def mixed_batch() -> list[Trajectory]:
    return [
        *gigpo_batch("g"),
        traj("k", [1.0, 0.0, 0.0, 2.0], ["s0", "q", "s0", "w"]),
        traj("k", [0.0, 0.5], ["s0", "q"]),
        traj("solo", [3.0, 1.0]),
    ]


CONFIGS = {"reinforce_pp": ReinforcePPConfig(gamma=0.5), "gigpo": GiGPOConfig(gamma=0.5)}


@pytest.mark.parametrize("name", GROUP_ESTIMATORS)
def test_permutation_equivariance(name):
    layout = build_layout(mixed_batch())
    perm = np.array([4, 2, 5, 0, 3, 1])
    base = estimate(name, layout, config=CONFIGS.get(name))
    permuted = estimate(name, layout.take(perm), config=CONFIGS.get(name))
    np.testing.assert_allclose(permuted.action, base.action[perm], atol=1e-12)


@pytest.mark.parametrize("name", GROUP_ESTIMATORS)
def test_padding_changes_nothing(name):
    layout = build_layout(mixed_batch())
    padded = layout.pad(rows=3, cols=4)
    base = estimate(name, layout, config=CONFIGS.get(name))
    out = estimate(name, padded, config=CONFIGS.get(name))
    B, T = layout.shape
    np.testing.assert_allclose(out.action[:B, :T], base.action, atol=1e-12)
    assert np.all(out.action[~padded.mask] == 0.0)
    assert np.all(out.subgoal[~padded.mask] == 0.0)
    assert np.all(out.switch[~padded.mask] == 0.0)
    assert np.all(base.action[~layout.mask] == 0.0)
    assert out.stats == pytest.approx(base.stats)


@pytest.mark.parametrize("name", GROUP_ESTIMATORS)
def test_padding_rewards_are_ignored(name):
    layout = build_layout(mixed_batch()).pad(rows=2, cols=2)
    rewards = np.where(layout.mask, layout.reward, 99.0)
    base = estimate(name, layout, config=CONFIGS.get(name))
    out = estimate(name, layout, rewards=rewards, config=CONFIGS.get(name))
    np.testing.assert_allclose(out.action, base.action, atol=1e-12)


@pytest.mark.parametrize("name", ["grpo", "rloo", "gigpo"])
def test_groups_are_independent(name):
    alone = build_layout(gigpo_batch("g"))
    both = build_layout(
        [*gigpo_batch("g"), traj("other", [5.0, 5.0], ["s0", "x"]), traj("other", [0.0])]
    )
    a = estimate(name, alone, config=CONFIGS.get(name))
    b = estimate(name, both, config=CONFIGS.get(name))
    B, T = alone.shape
    np.testing.assert_allclose(b.action[:B, :T], a.action, atol=1e-12)


@pytest.mark.parametrize("name", ["grpo", "rloo", "gigpo"])
def test_singleton_group_gives_zero(name):
    layout = build_layout([traj("solo", [3.0, 1.0], ["p", "p"]), *grpo_batch()])
    out = estimate(name, layout, config=CONFIGS.get(name))
    # gigpo: the solo trajectory revisits "p" -> a 2-member anchor group, so only A^E is 0 there
    if name == "gigpo":
        # G (gamma 0.5) = [3.5, 1]: dev +-1.25, unbiased std 1.767767 -> +-0.707107
        assert list(out.action[0, :2]) == pytest.approx([0.707107, -0.707107], abs=1e-5)
    else:
        assert np.all(out.action[0] == 0.0)
    alone = build_layout([traj("solo", [3.0])])
    assert np.all(estimate(name, alone, config=CONFIGS.get(name)).action == 0.0)


def test_identical_outcomes_give_zero():
    layout = build_layout([traj("a", [1.0]), traj("a", [0.0, 1.0])])
    for name in ["grpo", "rloo"]:
        assert np.all(estimate(name, layout).action == 0.0)


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GiGPOConfig(gamma=1.5), r"gamma.*1\.5"),
        (lambda: GiGPOConfig(gamma=-0.1), r"gamma.*-0\.1"),
        (lambda: GiGPOConfig(omega=-1.0), r"omega.*-1\.0"),
        (lambda: GiGPOConfig(norm="std"), r"norm.*'std'"),
        (lambda: ReinforcePPConfig(gamma=2.0), r"gamma.*2\.0"),
        (lambda: GiGPOConfig(omega=float("nan")), r"omega.*nan"),
    ],
)
def test_config_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_config_type_rejected():
    layout = build_layout(grpo_batch())
    with pytest.raises(TypeError):
        estimate("grpo", layout, config=RLOOConfig())


def test_registered_without_values():
    from hiper.algos import get_estimator

    for name in GROUP_ESTIMATORS:
        assert get_estimator(name).needs_values is False
