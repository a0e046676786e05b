"""Reward shaping (HAE.md §7) and the spreading of per-turn advantages onto tokens (HAE.md §5)."""

from __future__ import annotations

import numpy as np
import pytest

from hiper.algos import Values, build_layout, estimate
from hiper.algos.hae import HAEConfig
from hiper.algos.shaping import ShapingConfig, shape_rewards
from hiper.algos.tokens import token_advantages, turn_value_targets
from hiper.protocol.masks import BLOCK_INDEX, TokenSpans
from tests.helpers import response, trajectory


def shaped_layout():
    texts = [
        response("SWITCH", "find the mug", "go to desk 1"),
        response("KEEP", "Find  the mug.", "take mug 1"),  # same subgoal as text: consistent
        "<switch>KEEP</switch><subgoal>heat it</subgoal>garbage",  # invalid, and a changed subgoal
        response("KEEP", "heat the mug", "go to microwave 1"),  # changed subgoal on KEEP
        response("SWITCH", "cool the mug", "cool mug 1 with fridge 1"),
    ]
    tr = trajectory(
        ["SWITCH", "KEEP", "KEEP", "KEEP", "SWITCH"], [0, 0, 0, 0, 1.0], texts=texts, success=True
    )
    return build_layout([tr])


def test_each_shaping_term_by_hand():
    layout = shaped_layout()
    assert layout.valid[0].tolist() == [True, True, False, True, True]
    assert layout.keep_mismatch[0].tolist() == [False, False, True, True, False]
    np.testing.assert_allclose(shape_rewards(layout, ShapingConfig()), [[0, 0, 0, 0, 1.0]])
    np.testing.assert_allclose(
        shape_rewards(layout, ShapingConfig(success_reward=10.0)), [[0, 0, 0, 0, 10.0]]
    )
    np.testing.assert_allclose(
        shape_rewards(layout, ShapingConfig(invalid_penalty=0.1))[0], [0, 0, -0.1, 0, 1.0]
    )
    # fixed KEEP penalty on the 3 KEEP turns (turn 0 never pays)
    np.testing.assert_allclose(
        shape_rewards(layout, ShapingConfig(keep_penalty=0.3))[0], [0, -0.3, -0.3, -0.3, 1.0]
    )
    # normalized (the original runs' rule): .3 / T = .3 / 5 = .06 on each of the 3 KEEP turns
    r = shape_rewards(layout, ShapingConfig(keep_penalty=0.3, keep_penalty_mode="normalized"))[0]
    np.testing.assert_allclose(r, [0, -0.06, -0.06, -0.06, 1.0])
    np.testing.assert_allclose(r.sum() - 1.0, -0.3 * 3 / 5)
    # consistency: judged on normalised text ("Find  the mug." == "find the mug")
    np.testing.assert_allclose(
        shape_rewards(layout, ShapingConfig(consistency_penalty=0.3))[0], [0, 0, -0.3, -0.3, 1.0]
    )


def test_consistency_is_judged_against_the_previous_turns_subgoal():
    """The original runs' rule: a KEEP turn is compared with the subgoal written on the turn
    before it, so once the text drifts, KEEP turns that copy the drifted text are consistent
    (compared with the subgoal of the last SWITCH, all three later turns would pay)."""
    texts = [
        response("SWITCH", "find the mug", "go to desk 1"),
        response("KEEP", "find a mug", "look"),  # drifts: pays
        response("KEEP", "Find a mug", "look"),  # copies the drift (normalised equal): free
        "<switch>KEEP</switch>garbage, no subgoal",  # writes none: nothing to judge
        response("KEEP", "find  a mug.", "take mug 1"),  # vs "Find a mug" two turns back: free
        response("KEEP", "find the mug", "look"),  # back to the SWITCH's text, a change: pays
        response("SWITCH", "heat the mug", "go to microwave 1"),  # SWITCH: never judged
    ]
    tr = trajectory(["SWITCH"] + ["KEEP"] * 5 + ["SWITCH"], [0.0] * 7, texts=texts)
    layout = build_layout([tr])
    assert layout.keep_mismatch[0].tolist() == [False, True, False, False, False, True, False]
    r = shape_rewards(layout, ShapingConfig(consistency_penalty=0.3))[0]
    np.testing.assert_allclose(r, [0, -0.3, 0, 0, 0, -0.3, 0])


def test_normalized_keep_penalty_divides_by_each_trajectorys_length():
    short = trajectory(["SWITCH", "KEEP"], [0.0, 1.0])
    long = trajectory(["SWITCH", "KEEP", "KEEP", "SWITCH"], [0.0, 0.0, 0.0, 1.0])
    layout = build_layout([short, long])
    r = shape_rewards(layout, ShapingConfig(keep_penalty=3.5, keep_penalty_mode="normalized"))
    np.testing.assert_allclose(r, [[0, 1 - 1.75, 0, 0], [0, -0.875, -0.875, 1.0]])


def test_shaping_rejects_negative_magnitudes():
    with pytest.raises(ValueError, match="invalid_penalty is a magnitude"):
        ShapingConfig(invalid_penalty=-0.1)
    with pytest.raises(ValueError, match="keep_penalty_mode"):
        ShapingConfig(keep_penalty_mode="sometimes")


def spans_for(rows):
    """TokenSpans from per-row (length, {block: (start, end)})."""
    lengths = [n for n, _ in rows]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    spans = np.zeros((len(rows), 4, 2), np.int64)
    block_ends = np.full((len(rows), 4), -1, np.int64)
    for i, (_, blocks) in enumerate(rows):
        for name, (s, e) in blocks.items():
            spans[i, BLOCK_INDEX[name]] = (s, e)
            block_ends[i, BLOCK_INDEX[name]] = e
    return TokenSpans(
        offsets, spans, np.zeros(offsets[-1], np.int64), block_ends, np.zeros(len(rows), bool)
    )


def test_tokens_get_the_advantage_of_their_block():
    tr = trajectory(["SWITCH", "KEEP", "SWITCH"], [0.0, 0.0, 1.0], switch_probs=[0.5, 0.25, 0.5])
    layout = build_layout([tr])
    v = Values(
        high=np.array([[0.1, 0.2, 0.3]]),
        low=np.array([[0.4, 0.5, 0.6]]),
        prev=np.array([[0.0, 0.1, 0.2]]),
    )
    adv = estimate("hae", layout, values=v, config=HAEConfig(norm_adv=False))
    # row 0: 2 switch, 3 subgoal, 1 gap, 2 action, 1 eos ; row 1 the same ; row 2: switch only + garbage
    rows = [
        (9, {"switch": (0, 2), "subgoal": (2, 5), "action": (6, 8)}),
        (9, {"switch": (0, 2), "subgoal": (2, 5), "action": (6, 8)}),
        (4, {"switch": (0, 2)}),
    ]
    ts = spans_for(rows)
    tok = token_advantages(layout, adv, ts)
    a_l, a_h, a_s = adv.action[0], adv.subgoal[0], adv.switch[0]
    f32 = np.float32
    expect0 = [
        0,
        0,
        a_h[0],
        a_h[0],
        a_h[0],
        a_l[0],
        a_l[0],
        a_l[0],
        a_l[0],
    ]  # turn 0: switch not trained
    expect1 = [
        a_s[1],
        a_s[1],
        0,
        0,
        0,
        a_l[1],
        a_l[1],
        a_l[1],
        a_l[1],
    ]  # KEEP: copied subgoal not trained
    expect2 = [a_s[2], a_s[2], a_l[2], a_l[2]]
    np.testing.assert_allclose(tok.advantages, np.array(expect0 + expect1 + expect2, f32))
    assert (
        tok.loss_mask.tolist()
        == [False, False] + [True] * 7 + [True, True, False, False, False] + [True] * 4 + [True] * 4
    )
    # gain on turn 1: (0 - .25) * (V^H - V^P) = -.25 * (.2 - .1)
    np.testing.assert_allclose(a_s[1], -0.025)

    positions = {"start": np.zeros(3, np.int64), "after_subgoal": np.array([5, 5, 2])}
    vt = turn_value_targets(layout, adv, positions, ts)
    assert set(vt) == {"high", "low"}
    # high head: R^H on the two boundaries at position 0
    assert vt["high"].rows.tolist() == [0, 2] and vt["high"].positions.tolist() == [0, 0]
    # low head: R^L on all turns after </subgoal>, then V^P's target on the KEEP turn at position 0
    assert vt["low"].rows.tolist() == [0, 1, 2, 1]
    assert vt["low"].positions.tolist() == [5, 5, 2, 0]
    np.testing.assert_allclose(vt["low"].targets[3], vt["low"].targets[1])


def test_flat_estimators_train_every_token_with_one_advantage():
    tr = trajectory(["SWITCH", "KEEP"], [0.0, 1.0])
    layout = build_layout([tr])
    adv = estimate("gae", layout, values=Values(high=np.array([[0.5, 0.5]])))
    ts = spans_for([(3, {"switch": (0, 1), "subgoal": (1, 2)}), (2, {})])
    tok = token_advantages(layout, adv, ts)
    assert tok.loss_mask.all()
    np.testing.assert_allclose(tok.advantages, np.repeat(adv.action[0], [3, 2]).astype(np.float32))


def test_rows_must_match_the_layout():
    layout = build_layout([trajectory(["SWITCH"], [1.0])])
    adv = estimate("gae", layout, values=Values(high=np.zeros((1, 1))))
    with pytest.raises(ValueError, match="token spans have 2 rows but the layout has 1"):
        token_advantages(layout, adv, spans_for([(1, {}), (1, {})]))
