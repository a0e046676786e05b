"""hiper.train: loss functions by hand, the batch alignment, micro-batching invariance, the PPO
update against a hand-computed loss and AdamW step, and SFT."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from hiper.algos.tokens import TokenAdvantages, TurnValueTargets
from hiper.protocol import parse
from hiper.train.batch import (
    build_train_batch,
    fill_from_forward,
    micro_batches,
    select_rows,
)
from hiper.train.losses import (
    entropy_bonus,
    kl_k3,
    masked_sum_mean,
    policy_loss,
    value_loss,
    value_loss_terms,
)
from hiper.train.ppo import PPOConfig, make_optimizer, ppo_update
from hiper.train.sft import SFTExample, expert_examples, sft_loss, sft_update
from hiper.types import Turn

HEADS = ("high", "low")

# ---------------------------------------------------------------------------------------------
# pure losses, by hand


def test_policy_loss_by_hand():
    # token: ratio, advantage ->  l1 = -A r, l2 = -A clip(r, .8, 1.2), max(l1, l2), dual clip
    #  0: r=1.5, A=+1  -> l1=-1.5, l2=-1.2 -> -1.2 (clipped)
    #  1: r=0.5, A=+2  -> l1=-1.0, l2=-1.6 -> -1.0 (not clipped)
    #  2: r=0.5, A=-1  -> l1= 0.5, l2= 0.8 ->  0.8 (clipped); dual cap 3 not reached
    #  3: r=10,  A=-1  -> l1=10,   l2= 1.2 -> 10 -> dual clip: min(10, 3 * 1) = 3
    #  4: masked out (r=100, A=5)
    ratio = torch.tensor([1.5, 0.5, 0.5, 10.0, 100.0])
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0, -4.0])
    logp = (old + ratio.log()).requires_grad_(True)
    adv = torch.tensor([1.0, 2.0, -1.0, -1.0, 5.0])
    mask = torch.tensor([True, True, True, True, False])
    loss, st = policy_loss(logp, old, adv, mask, 0.2, 0.2, 3.0)
    assert loss.item() == pytest.approx((-1.2 - 1.0 + 0.8 + 3.0) / 4)  # 0.4
    assert st["clip_frac"].item() == pytest.approx(2 / 4)  # tokens 0 and 2
    assert st["dual_clip_frac"].item() == pytest.approx(1 / 4)  # token 3
    assert st["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 0.5 + 10) / 4)
    kl = -(math.log(1.5) + 2 * math.log(0.5) + math.log(10)) / 4
    assert st["approx_kl"].item() == pytest.approx(kl, rel=1e-5)
    # only the unclipped token 1 has a gradient: d(-A r)/dlogp = -A r = -1, over 4 tokens
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [0, -0.25, 0, 0, 0], atol=1e-7)
    # a global normaliser (tokens of the whole mini-batch) replaces the local count
    loss8, _ = policy_loss(logp.detach(), old, adv, mask, 0.2, 0.2, 3.0, normalizer=8)
    assert loss8.item() == pytest.approx(1.6 / 8)
    # without the dual clip token 3 costs its full 10
    loss_nd, _ = policy_loss(logp.detach(), old, adv, mask, 0.2, 0.2, None)
    assert loss_nd.item() == pytest.approx((-1.2 - 1.0 + 0.8 + 10.0) / 4)
    # asymmetric clip: clip_high .6 lets token 0 through unclipped (-1.5)
    loss_hi, _ = policy_loss(logp.detach(), old, adv, mask, 0.2, 0.6, 3.0)
    assert loss_hi.item() == pytest.approx((-1.5 - 1.0 + 0.8 + 3.0) / 4)


def test_kl_k3_by_hand():
    # d = ref - logp; k3 = e^d - d - 1
    logp = torch.tensor([math.log(0.5), math.log(0.5), -1.0, 0.0, -40.0])
    ref = torch.tensor([math.log(0.25), math.log(0.5), -1.0 + 30.0, -30.0, -1.0])
    k = kl_k3(logp, ref)
    d0 = math.log(0.5)
    assert k[0].item() == pytest.approx(math.exp(d0) - d0 - 1)  # 0.5 + ln 2 - 1 = 0.19315
    assert k[0].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k[1].item() == 0.0  # identical distributions
    assert k[2].item() == 10.0  # d = +30 -> clamped to 20 -> e^20 - 21 -> clamped to 10
    assert k[3].item() == 10.0  # d = -30 -> clamped to -20 -> e^-20 + 19 -> clamped to 10
    assert k[4].item() == 10.0
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()
    mask = torch.tensor([True, True, False, False, False])
    assert masked_sum_mean(k, mask).item() == pytest.approx((0.5 + math.log(2) - 1) / 2)


def test_entropy_bonus_is_a_masked_token_mean():
    ent = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([True, True, True, False])
    assert entropy_bonus(ent, mask).item() == pytest.approx(2.0)
    assert entropy_bonus(ent, mask, normalizer=6).item() == pytest.approx(1.0)


def test_value_loss_clipping_by_hand():
    # 0.5 * max((v - t)^2, (old + clip(v - old, -.5, .5) - t)^2)
    #  a: v=1,  old=0, t=.2 -> max(.64, (.5 - .2)^2 = .09)  = .64  -> .32
    #  b: v=1,  old=0, t=2  -> max(1,   (.5 - 2)^2 = 2.25)  = 2.25 -> 1.125 (clipped branch)
    #  c: v=.1, old=0, t=1  -> max(.81, .81)                        -> .405
    v = torch.tensor([1.0, 1.0, 0.1], requires_grad=True)
    old = torch.zeros(3)
    t = torch.tensor([0.2, 2.0, 1.0])
    terms = value_loss_terms(v, old, t, 0.5)
    np.testing.assert_allclose(terms.detach().numpy(), [0.32, 1.125, 0.405], rtol=1e-6)
    loss = value_loss(v, old, t, 0.5)
    assert loss.item() == pytest.approx((0.32 + 1.125 + 0.405) / 3)
    loss.backward()
    # d/dv 0.5 (v - t)^2 = v - t on the unclipped branch; 0 where the clipped branch wins
    np.testing.assert_allclose(v.grad.numpy(), np.array([0.8, 0.0, -0.9]) / 3, rtol=1e-6)
    # per head: mean within each head, summed over heads: (.32 + .405) / 2 + 1.125
    head = torch.tensor([0, 1, 0])
    assert value_loss(v, old, t, 0.5, head=head).item() == pytest.approx(0.3625 + 1.125)
    # global per-head counts (mini-batch) as the normaliser
    got = value_loss(v, old, t, 0.5, head=head, normalizer=torch.tensor([4.0, 2.0]))
    assert got.item() == pytest.approx(0.725 / 4 + 1.125 / 2)
    # no clipping: plain 0.5 (v - t)^2, b then costs .5
    assert value_loss(v, old, t, None).item() == pytest.approx((0.32 + 0.5 + 0.405) / 3)


# ---------------------------------------------------------------------------------------------
# the batch


def make_turn(prompt: list[int], response: list[int]) -> Turn:
    text = "<switch>SWITCH</switch>\n<subgoal>g</subgoal>\n<action>a</action>"
    return Turn(
        observation="obs",
        response_text=text,
        decision=parse(text),
        prompt_ids=np.asarray(prompt, np.int64),
        response_ids=np.asarray(response, np.int64),
    )


def small_batch():
    turns = [make_turn([5, 6, 7], [8, 9]), make_turn([1, 2], [3, 4])]
    tok = TokenAdvantages(
        offsets=np.array([0, 2, 4]),
        advantages=np.array([1.0, 2.0, 3.0, 4.0], np.float32),
        loss_mask=np.array([True, False, True, True]),
    )
    vts = {
        "high": TurnValueTargets(np.array([0, 1]), np.array([0, 0]), np.array([0.5, -0.5])),
        "low": TurnValueTargets(np.array([1]), np.array([2]), np.array([7.0], np.float32)),
    }
    return build_train_batch(turns, tok, vts, HEADS)


def test_batch_aligns_response_tokens_and_value_positions():
    b = small_batch()
    assert b.prompt_len.tolist() == [3, 2]
    assert b.num_tokens == 3
    # value of position p sits at prompt_len + p - 1 (the prefix before p)
    assert b.vt_row.tolist() == [0, 1, 1]
    assert b.vt_pos.tolist() == [2, 1, 3]
    assert b.vt_head.tolist() == [0, 0, 1]
    (mb,) = list(micro_batches(b, pad_id=99))
    assert mb.input_ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 99]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # response token j of row i at prompt_len_i + j
    assert mb.advantages.tolist() == [[0, 0, 0, 1, 0], [0, 0, 3, 4, 0]]
    assert mb.loss_mask.int().tolist() == [[0, 0, 0, 1, 0], [0, 0, 1, 1, 0]]
    assert mb.response_mask.int().tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]]
    # micro-batches of one row each cover every token and target exactly once
    parts = list(micro_batches(b, max_rows=1))
    assert [p.rows.tolist() for p in parts] == [[0], [1]]
    assert sorted(torch.cat([p.resp_index for p in parts]).tolist()) == [0, 1, 2, 3]
    assert sorted(torch.cat([p.vt_index for p in parts]).tolist()) == [0, 1, 2]
    assert parts[1].vt_b.tolist() == [0, 0] and parts[1].vt_pos.tolist() == [1, 3]
    # a token budget of 9 cannot hold two rows of 5 padded tokens
    assert [p.rows.tolist() for p in micro_batches(b, max_tokens=9)] == [[0], [1]]


def test_select_rows_refuses_repeated_rows():
    b = small_batch()
    with pytest.raises(ValueError, match="must not repeat"):
        select_rows(b, [1, 1, 0])
    r = select_rows(b, [1, 0])
    assert r.num_tokens == b.num_tokens and r.vt_row.tolist() == [1, 0, 0]  # rows 1, 0 -> 0, 1


def test_batch_rejects_misaligned_inputs():
    turns = [make_turn([5, 6, 7], [8, 9])]
    tok = TokenAdvantages(np.array([0, 3]), np.zeros(3, np.float32), np.ones(3, bool))
    with pytest.raises(ValueError, match="response ids"):
        build_train_batch(turns, tok, {}, HEADS)
    tok = TokenAdvantages(np.array([0, 2]), np.zeros(2, np.float32), np.ones(2, bool))
    bad = {"term": TurnValueTargets(np.array([0]), np.array([0]), np.array([1.0]))}
    with pytest.raises(ValueError, match="not in the model's heads"):
        build_train_batch(turns, tok, bad, HEADS)
    far = {"low": TurnValueTargets(np.array([0]), np.array([3]), np.array([1.0]))}
    with pytest.raises(ValueError, match="response positions"):
        build_train_batch(turns, tok, far, HEADS)


def test_ppo_config_is_validated():
    with pytest.raises(ValueError, match="dual_clip"):
        PPOConfig(dual_clip=0.5)
    with pytest.raises(ValueError, match="micro_batch_rows"):
        PPOConfig(micro_batch_rows=0)
    with pytest.raises(ValueError, match="actor_lr"):
        PPOConfig(actor_lr=-1.0)


# ---------------------------------------------------------------------------------------------
# a tiny real model


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from hiper.demos import household_corpus
    from hiper.models.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny"),
        household_corpus(n_episodes=6),
        vocab_size=400,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        seed=0,
    )


@pytest.fixture
def policy(tiny_path):
    from hiper.models.policy import load_policy

    torch.manual_seed(0)
    return load_policy(tiny_path, heads=HEADS)


def random_batch(seed: int = 0, rows: int = 5, vocab: int = 300):
    rng = np.random.default_rng(seed)
    turns, advs, masks, lengths = [], [], [], []
    for _ in range(rows):
        p = rng.integers(3, vocab, size=int(rng.integers(2, 7))).tolist()
        r = rng.integers(3, vocab, size=int(rng.integers(3, 9))).tolist()
        turns.append(make_turn(p, r))
        advs.append(rng.normal(size=len(r)).astype(np.float32))
        masks.append(rng.random(len(r)) < 0.8)
        lengths.append(len(r))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    tok = TokenAdvantages(offsets, np.concatenate(advs), np.concatenate(masks))
    n = len(turns)
    low_rows = np.arange(0, n, 2)
    vts = {
        "high": TurnValueTargets(np.arange(n), np.zeros(n, np.int64), rng.normal(size=n)),
        "low": TurnValueTargets(
            low_rows,
            np.array([int(rng.integers(1, lengths[i] + 1)) for i in low_rows]),
            rng.normal(size=low_rows.size),
        ),
    }
    return build_train_batch(turns, tok, vts, HEADS)


def perturb(batch, seed: int = 1):
    """Move old/reference log-probs and old values off the current model so that ratio clipping,
    the dual clip, the KL and value clipping all have something to do."""
    g = torch.Generator().manual_seed(seed)
    batch.old_logprobs = batch.old_logprobs + torch.empty_like(batch.old_logprobs).uniform_(
        -0.6, 0.6, generator=g
    )
    batch.ref_logprobs = batch.ref_logprobs + torch.empty_like(batch.ref_logprobs).uniform_(
        -1.0, 1.0, generator=g
    )
    batch.old_values = batch.old_values + torch.empty_like(batch.old_values).uniform_(
        -1.0, 1.0, generator=g
    )
    return batch


class GradRecorder(torch.optim.Optimizer):
    """An 'optimiser' whose step only records the gradients."""

    def __init__(self, params):
        super().__init__(params, {})
        self.grads: list[list[torch.Tensor | None]] = []

    def step(self, closure=None):
        self.grads.append(
            [
                None if p.grad is None else p.grad.clone()
                for g in self.param_groups
                for p in g["params"]
            ]
        )


def test_fill_from_forward_matches_an_unpadded_forward(policy):
    batch = fill_from_forward(random_batch(), policy, micro_batch_size=2)
    for i in range(batch.num_rows):
        row = batch.row(i)
        ids = row["input_ids"][None]
        P = int(row["prompt_len"])
        with torch.no_grad():
            out = policy(ids, torch.ones_like(ids), with_values=True)
            ref = policy.reference_logprobs(ids, torch.ones_like(ids))
        np.testing.assert_allclose(row["old_logprobs"], out.logprobs[0, P:], atol=1e-5)
        np.testing.assert_allclose(row["ref_logprobs"], ref[0, P:], atol=1e-5)
        sel = batch.vt_row == i
        got = batch.old_values[sel]
        want = out.values[0, batch.vt_pos[sel], batch.vt_head[sel]]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_micro_batching_does_not_change_the_gradient(policy):
    """Whole mini-batch vs one row per micro-batch vs a token budget:
    the accumulated gradient is the same, within 1e-6 relative to the largest gradient entry of
    each tensor (float32 rounding of sums over different padded shapes; entries here reach ~3)."""
    batch = perturb(fill_from_forward(random_batch(rows=5), policy))
    grads = []
    for cfg, b in (
        (PPOConfig(grad_clip=None), batch),
        (PPOConfig(grad_clip=None, micro_batch_rows=1), batch),
        (PPOConfig(grad_clip=None, micro_batch_tokens=20), batch),
    ):
        opt = GradRecorder([p for p in policy.parameters() if p.requires_grad])
        ppo_update(policy, opt, b, cfg)
        (g,) = opt.grads
        grads.append(g)
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                scale = max(1.0, float(a.abs().max()))
                assert float((a - b).abs().max()) <= 1e-6 * scale
    assert any(g is not None and g.abs().sum() > 0 for g in grads[0])


def test_ppo_update_matches_a_hand_computed_loss_and_adamw_step(policy):
    cfg = PPOConfig(
        kl_coef=0.1,
        entropy_coef=0.01,
        vf_coef=0.5,
        value_clip=0.5,
        grad_clip=1.0,
        micro_batch_rows=2,
        actor_lr=1e-3,
        critic_lr=1e-2,
        weight_decay=0.01,
        adam_eps=1e-4,  # large eps: the step depends on the gradient's size, not only its sign
    )
    batch = perturb(fill_from_forward(random_batch(rows=4, seed=3), policy))
    manual = copy.deepcopy(policy)

    # --- expected loss, row by row without padding, formulas written out ---------------------
    eps = 0.2
    T = int(batch.loss_mask.sum())
    R = int(batch.resp_offsets[-1])  # KL and entropy cover every response token
    assert T < R  # the batch has untrained response tokens
    n_head = [int((batch.vt_head == h).sum()) for h in range(2)]
    pg = kl = ent = 0.0
    vl = [0.0, 0.0]
    clipped_tokens = 0
    manual.train()
    for i in range(batch.num_rows):
        row = batch.row(i)
        ids = row["input_ids"][None]
        P = int(row["prompt_len"])
        logits = manual.lm(input_ids=ids).logits[0].float()
        out = manual(ids, torch.ones_like(ids), with_values=True)
        for j in range(ids.shape[1] - P):
            logq = torch.log_softmax(logits[P + j - 1], -1)
            lp = logq[ids[0, P + j]]
            d = row["ref_logprobs"][j] - lp
            kl = kl + (torch.exp(d) - d - 1)
            ent = ent - (logq.exp() * logq).sum()
            if not row["loss_mask"][j]:
                continue
            A = float(row["advantages"][j])
            r = torch.exp(lp - row["old_logprobs"][j])
            surrogate = torch.maximum(-A * r, -A * torch.clamp(r, 1 - eps, 1 + eps))
            if A < 0:
                surrogate = torch.minimum(surrogate, torch.tensor(-3.0 * A))
            clipped_tokens += int(bool(-A * torch.clamp(r, 1 - eps, 1 + eps) > -A * r))
            pg = pg + surrogate
        for k in torch.nonzero(batch.vt_row == i).reshape(-1).tolist():
            h = int(batch.vt_head[k])
            v = out.values[0, int(batch.vt_pos[k]), h]
            old, t = batch.old_values[k], batch.vt_target[k]
            v_clip = old + torch.clamp(v - old, -0.5, 0.5)
            vl[h] = vl[h] + 0.5 * torch.maximum((v - t) ** 2, (v_clip - t) ** 2) / n_head[h]
    expected = pg / T + 0.1 * kl / R - 0.01 * ent / R + 0.5 * (vl[0] + vl[1])
    assert 0 < clipped_tokens < T  # the perturbation makes some (not all) tokens clip

    # --- one AdamW step by hand on the clipped gradient ---------------------------------------
    expected.backward()
    groups = [
        (list(manual.actor_parameters()), cfg.actor_lr),
        (list(manual.critic_parameters()), cfg.critic_lr),
    ]
    # each group's gradient is clipped on its own (the critic's large value-loss gradient must not
    # shrink the actor's step)
    norms = [
        math.sqrt(sum(float((p.grad**2).sum()) for p in ps if p.grad is not None))
        for ps, _ in groups
    ]
    b1, b2 = cfg.adam_betas
    with torch.no_grad():
        for (ps, lr), norm in zip(groups, norms, strict=True):
            scale = min(1.0, cfg.grad_clip / (norm + 1e-6))
            for p in ps:
                if not p.requires_grad or p.grad is None:
                    continue
                g = p.grad * scale
                m_hat = (1 - b1) * g / (1 - b1)  # first step: bias-corrected moments are g, g^2
                v_hat = (1 - b2) * g * g / (1 - b2)
                p.mul_(1 - lr * cfg.weight_decay)
                p.sub_(lr * m_hat / (v_hat.sqrt() + cfg.adam_eps))

    # --- the library's update ----------------------------------------------------------------
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = make_optimizer(policy, cfg)
    assert [g["lr"] for g in opt.param_groups] == [cfg.actor_lr, cfg.critic_lr]
    m = ppo_update(policy, opt, batch, cfg)
    assert m["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert m["pg_loss"] == pytest.approx((pg / T).item(), rel=1e-5, abs=1e-7)
    assert m["kl"] == pytest.approx((kl / R).item(), rel=1e-5)
    assert m["entropy"] == pytest.approx((ent / R).item(), rel=1e-5)
    assert m["value_loss/high"] == pytest.approx((vl[0]).item(), rel=1e-5)
    assert m["value_loss/low"] == pytest.approx((vl[1]).item(), rel=1e-5)
    assert m["clip_frac"] == pytest.approx(clipped_tokens / T)
    assert m["grad_norm/actor"] == pytest.approx(norms[0], rel=1e-5)
    assert m["grad_norm/critic"] == pytest.approx(norms[1], rel=1e-5)
    assert m["tokens"] == T and m["steps"] == 1
    assert max(norms) > cfg.grad_clip  # the clipping was exercised
    manual_params = dict(manual.named_parameters())
    changed = 0
    for name, p in policy.named_parameters():
        torch.testing.assert_close(p.detach(), manual_params[name].detach(), atol=1e-6, rtol=1e-5)
        changed += int(not torch.equal(p.detach(), before[name]))
    assert changed > 0


def test_mini_batches_take_one_step_each(policy):
    batch = perturb(fill_from_forward(random_batch(rows=5), policy))
    cfg = PPOConfig(mini_batch_rows=2, ppo_epochs=2, micro_batch_rows=1)
    m = ppo_update(policy, make_optimizer(policy, cfg), batch, cfg)
    assert m["steps"] == 6  # ceil(5 / 2) mini-batches x 2 epochs
    assert math.isfinite(m["loss"]) and math.isfinite(m["explained_var/high"])


# ---------------------------------------------------------------------------------------------
# SFT


def test_sft_loss_ignores_prompt_tokens():
    torch.manual_seed(0)
    logp = -torch.rand(2, 6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    loss = sft_loss(logp, mask)
    assert loss.item() == pytest.approx(-float(logp[mask].mean()))
    changed = logp.clone()
    changed[~mask] = -50.0  # any prompt/padding target is irrelevant
    assert sft_loss(changed, mask).item() == pytest.approx(loss.item())


def test_sft_steps_drive_the_loss_down(policy):
    ex = SFTExample(np.array([5, 6, 7, 8]), np.array([20, 21, 22, 23, 24, 25]))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    losses = [sft_update(policy, opt, [ex])["loss"] for _ in range(15)]
    assert losses[-1] < losses[0] - 1.0
    # the reported loss is the mean NLL of the 6 response tokens only
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7, 8, 20, 21, 22, 23, 24, 25]])
        out = policy(ids, torch.ones_like(ids), with_values=False)
    nll = -float(out.logprobs[0, 4:].mean())
    assert sft_update(policy, torch.optim.SGD(policy.parameters(), lr=0.0), [ex])[
        "loss"
    ] == pytest.approx(nll, rel=1e-5)


def test_expert_examples_on_household(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    exs = expert_examples("household", n_episodes=2, noise=0.3, seed=0, tokenizer=tok)
    assert len(exs) > 4
    prev_subgoal = None
    for ex in exs:
        prompt_text = tok.decode(ex.prompt_ids)
        assert ex.prompt in prompt_text and prompt_text.rstrip().endswith("assistant")
        assert "Your task: " in ex.prompt
        assert ex.response_ids[-1] == tok.eos_token_id
        text = tok.decode(ex.response_ids, skip_special_tokens=True)
        assert text == ex.response
        d = parse(text)
        assert d.valid, d.reason
        if "You have not taken any steps yet" in ex.prompt:
            assert "Current subgoal: None" in ex.prompt
        else:  # the prompt shows the subgoal the agent holds: the previous turn's
            assert f"Current subgoal: {prev_subgoal}" in ex.prompt
        prev_subgoal = d.subgoal
    # the same arguments give the same examples
    again = expert_examples("household", n_episodes=2, noise=0.3, seed=0, tokenizer=tok)
    assert [e.response for e in again] == [e.response for e in exs]


def test_expert_examples_in_the_flat_react_format(tiny_path):
    """ReAct demonstrations for the flat baselines: the same expert episodes, the expert's subgoal
    as the thought, no subgoal in the prompt; the one parser reads them as valid react turns."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    pe = expert_examples("household", n_episodes=2, noise=0.0, seed=0, tokenizer=tok)
    flat = expert_examples("household", 2, 0.0, 0, tok, format="react")
    assert len(flat) == len(pe)
    for a, b in zip(pe, flat, strict=True):
        d_pe, d_flat = parse(a.response), parse(b.response, "react")
        assert d_flat.valid, d_flat.reason
        assert (d_flat.think, d_flat.action) == (d_pe.subgoal, d_pe.action)
        assert b.response == f"<think>{d_pe.subgoal}</think>\n<action>{d_pe.action}</action>"
        assert "Current subgoal" not in b.prompt and "<switch>" not in b.response
    with pytest.raises(ValueError, match="format must be 'plan_execute' or 'react', got 'flat'"):
        expert_examples("household", 1, 0.0, 0, tok, format="flat")


def test_expert_examples_noise_repeats_actions_and_targets_recovery(tiny_path):
    """Noise executes a non-expert action (half of the time the previous action again, which the
    household answers "Nothing happens."); the example at the resulting state targets the expert's
    recovery, never the noise action. Without instructions the prompts are the bare sections."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    exs = expert_examples(
        "household",
        n_episodes=30,
        noise=0.5,
        seed=3,
        tokenizer=tok,
        history_len=1,
        instructions=False,
    )
    nothing = [e for e in exs if "Current observation: Nothing happens." in e.prompt]
    assert len(nothing) >= 10  # repeated actions happened and were recorded
    for e in nothing:
        assert not e.prompt.startswith("You are") and "Rules:" not in e.prompt
        repeated = e.prompt.split("Action: ")[-1].split("\n")[0]
        action = parse(e.response).action
        assert action and action != repeated  # the target moves on instead of repeating
    clean = expert_examples("household", n_episodes=30, noise=0.0, seed=3, tokenizer=tok)
    assert not any("Current observation: Nothing happens." in e.prompt for e in clean)


def test_sft_learning_rate_schedule():
    from hiper.train.sft import sft_lr_factor

    total, warmup = 100, 10
    factors = [sft_lr_factor(s, total, warmup) for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1)
    after = factors[warmup:]
    assert all(a >= b for a, b in itertools.pairwise(after))
    assert sft_lr_factor(0, 1, 0) == pytest.approx(1.0)


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_critic_warmup_update_moves_only_the_critic(tiny_path, critic):
    from hiper.models.policy import load_policy
    from hiper.train.ppo import critic_update

    torch.manual_seed(0)
    model = load_policy(tiny_path, heads=HEADS, critic=critic)
    batch = perturb(fill_from_forward(random_batch(rows=4, seed=5), model))
    assert batch.vt_row.numel() > 0 and bool((batch.advantages != 0).any())
    cfg = PPOConfig(actor_lr=1e-2, critic_lr=1e-2, micro_batch_rows=2)
    actor = {id(p) for p in model.actor_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, cfg)
    m = critic_update(model, opt, batch, cfg, epochs=1)  # what the loop runs while warming up
    assert m["steps"] == 1 and m["value_loss"] > 0
    assert m["value_loss"] == pytest.approx(sum(m[f"value_loss/{h}"] for h in HEADS), rel=1e-6)
    assert m["grad_norm/actor"] == 0.0 and m["grad_norm/critic"] > 0
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    names = {id(p): n for n, p in model.named_parameters()}
    assert moved and moved.isdisjoint(names[i] for i in actor)
    # the same batch with the actor on moves the policy too
    m = ppo_update(model, opt, batch, cfg)
    assert any(not torch.equal(p.detach(), before[names[id(p)]]) for p in model.actor_parameters())


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_critic_epochs_refit_only_the_critic_and_lower_its_loss(tiny_path, critic):
    from hiper.models.policy import load_policy
    from hiper.train.ppo import critic_update

    torch.manual_seed(0)
    model = load_policy(tiny_path, heads=HEADS, critic=critic)
    batch = perturb(fill_from_forward(random_batch(rows=4, seed=5), model))
    assert batch.vt_row.numel() > 0
    cfg = PPOConfig(
        actor_lr=1e-2, critic_lr=1e-2, mini_batch_rows=2, micro_batch_rows=2, critic_epochs=3
    )
    actor = {id(p) for p in model.actor_parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, cfg)
    losses = [
        critic_update(model, opt, batch, cfg, iteration=i, epochs=1)["value_loss"] for i in range(8)
    ]
    assert losses[-1] < 0.5 * losses[0]  # the same targets, refitted: the loss falls
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and moved.isdisjoint(names[i] for i in actor)  # the policy never moves
    # through ppo_update: the PPO epoch, then critic_epochs value-only epochs of 2 steps each
    m = ppo_update(model, opt, batch, cfg)
    assert m["critic_steps"] == 3 * 2 and m["critic_value_loss"] >= 0
    with pytest.raises(ValueError, match="critic_epochs must be an integer >= 0"):
        PPOConfig(critic_epochs=-1)
