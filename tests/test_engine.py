"""hiper.engines.hf: batched HF generation, sampled-token log-probs, stopping and seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from hiper.engines import Generation, HFEngine, chat_prompt_ids  # noqa: E402
from hiper.models.policy import LoraSettings, PolicyModel, load_policy  # noqa: E402

USER_TEXTS = [
    "Your task is to: put a clean mug in cabinet 1.",
    "go to countertop 1",
    "You are in the middle of a room. Looking quickly around you, you see a drawer 1, a "
    "sinkbasin 1 and a fridge 1.\n\nYour task is to: cool an apple and put it on the table.",
]


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> PolicyModel:
    return load_policy(tiny_model_dir, reference=False)


@pytest.fixture(scope="module")
def prompts(policy: PolicyModel) -> list[list[int]]:
    return [chat_prompt_ids(policy.tokenizer, t) for t in USER_TEXTS]


def greedy_by_hand(lm, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Argmax decoding by full forward passes (no cache, no padding)."""
    ids = torch.tensor([prompt])
    out, lps = [], []
    with torch.no_grad():
        for _ in range(n):
            logits = lm(input_ids=ids).logits[0, -1].float()
            tok = int(torch.argmax(logits))
            out.append(tok)
            lps.append(float(torch.log_softmax(logits, -1)[tok]))
            ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)
    return out, lps


def forward_logprobs(policy: PolicyModel, prompt: list[int], gen: Generation) -> np.ndarray:
    ids = torch.tensor([prompt + gen.ids.tolist()])
    with torch.no_grad():
        lp = policy(ids, torch.ones_like(ids), with_values=False).logprobs
    return lp[0, len(prompt) :].numpy()


def test_chat_prompt_ids_renders_chatml(policy: PolicyModel):
    tok = policy.tokenizer
    ids = chat_prompt_ids(tok, "open drawer 2")
    text = "<|im_start|>user\nopen drawer 2<|im_end|>\n<|im_start|>assistant\n"
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert all(isinstance(i, int) for i in ids)
    with_system = chat_prompt_ids(tok, "open drawer 2", system="be brief")
    assert tok.decode(with_system).startswith("<|im_start|>system\nbe brief<|im_end|>")


def test_greedy_equals_manual_argmax_loop(policy: PolicyModel, prompts):
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=12, stop_token_ids=[10**9])
    gens = engine.generate(prompts, greedy=True)
    assert len(gens) == len(prompts)
    for prompt, gen in zip(prompts, gens, strict=True):
        ids, lps = greedy_by_hand(policy.lm, prompt, 12)
        assert gen.ids.dtype == np.int64 and gen.logprobs.dtype == np.float32
        assert gen.ids.tolist() == ids
        np.testing.assert_allclose(gen.logprobs, lps, atol=1e-4)
        assert gen.finish == "length"
        assert gen.text == policy.tokenizer.decode(ids, skip_special_tokens=True)


def test_sampled_logprobs_equal_forward_pass_at_temperature_one(policy: PolicyModel, prompts):
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=24)
    gens = engine.generate(prompts, seed=0)
    for prompt, gen in zip(prompts, gens, strict=True):
        assert len(gen.ids) == len(gen.logprobs) > 0
        np.testing.assert_allclose(gen.logprobs, forward_logprobs(policy, prompt, gen), atol=1e-4)


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 1.0), (1.3, 0.8), (1.0, 0.05)])
def test_logprobs_are_of_the_tempered_nucleus_distribution(
    policy: PolicyModel, prompts, temperature: float, top_p: float
):
    engine = HFEngine(
        policy.lm, policy.tokenizer, max_new_tokens=10, temperature=temperature, top_p=top_p
    )
    gens = engine.generate(prompts[:2], seed=3)
    for prompt, gen in zip(prompts[:2], gens, strict=True):
        ids = torch.tensor([prompt + gen.ids.tolist()])
        with torch.no_grad():
            logits = policy.lm(input_ids=ids).logits[0].float() / temperature
        for k, tok in enumerate(gen.ids.tolist()):
            probs = torch.softmax(logits[len(prompt) + k - 1], -1)
            order = torch.argsort(probs, descending=True)
            before = torch.cumsum(probs[order], 0) - probs[order]  # mass of more likely tokens
            nucleus = order[before < top_p]
            assert tok in set(nucleus.tolist())  # sampled from inside the nucleus
            want = torch.log(probs[tok] / probs[nucleus].sum())
            assert gen.logprobs[k] == pytest.approx(float(want), abs=1e-4)


def test_top_p_tiny_is_greedy(policy: PolicyModel, prompts):
    greedy = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=8).generate(prompts, greedy=True)
    nucleus = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=8, top_p=1e-6).generate(
        prompts, seed=5
    )
    for g, n in zip(greedy, nucleus, strict=True):
        assert g.ids.tolist() == n.ids.tolist()
        np.testing.assert_allclose(n.logprobs, 0.0, atol=1e-6)  # one-token nucleus


def test_stop_token_ends_generation_and_is_included(policy: PolicyModel, prompts):
    free = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=16, stop_token_ids=[10**9])
    long = free.generate(prompts, greedy=True)
    stop = int(long[0].ids[3])  # a token the first prompt produces at step 3
    first = int(np.flatnonzero(long[0].ids == stop)[0])
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=16, stop_token_ids=[stop])
    gens = engine.generate(prompts, greedy=True)
    assert gens[0].finish == "stop"
    assert gens[0].ids.tolist() == long[0].ids[: first + 1].tolist()
    assert gens[0].ids[-1] == stop and len(gens[0].logprobs) == first + 1
    np.testing.assert_allclose(gens[0].logprobs, long[0].logprobs[: first + 1], atol=1e-5)
    for g, free_g in zip(gens[1:], long[1:], strict=True):  # rows are independent
        hits = np.flatnonzero(free_g.ids == stop)
        if hits.size:
            assert g.finish == "stop" and g.ids.tolist() == free_g.ids[: hits[0] + 1].tolist()
        else:
            assert g.finish == "length" and g.ids.tolist() == free_g.ids.tolist()


def test_eos_is_a_default_stop_token_and_skipped_in_text(policy: PolicyModel, prompts):
    tok = policy.tokenizer
    engine = HFEngine(policy.lm, tok, max_new_tokens=4)
    assert tok.eos_token_id in engine.stop_token_ids
    assert engine.pad_token_id == tok.pad_token_id
    # make <|im_end|> the most likely next token everywhere: scale its (tied) embedding
    # along the direction the final hidden states share
    lm = load_policy(policy.meta["base_path"], reference=False).lm
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        h = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        lm.get_output_embeddings().weight[tok.eos_token_id] = 50 * h.mean(0) / h.mean(0).norm()
    gens = HFEngine(lm, tok, max_new_tokens=4).generate(prompts, greedy=True)
    for g in gens:
        assert g.finish == "stop" and g.ids[-1] == tok.eos_token_id
        assert "<|im_end|>" not in g.text
        assert g.text == tok.decode(g.ids[:-1].tolist())


def test_max_new_tokens_gives_length(policy: PolicyModel, prompts):
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=5, stop_token_ids=[10**9])
    for g in engine.generate(prompts, seed=1):
        assert g.finish == "length" and len(g.ids) == 5 and len(g.logprobs) == 5


def test_batched_equals_one_by_one(policy: PolicyModel, prompts):
    assert len({len(p) for p in prompts}) == len(prompts)  # different prompt lengths
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=10)
    together = engine.generate(prompts, greedy=True)
    for prompt, g in zip(prompts, together, strict=True):
        (alone,) = engine.generate([prompt], greedy=True)
        assert g.ids.tolist() == alone.ids.tolist() and g.finish == alone.finish
        np.testing.assert_allclose(g.logprobs, alone.logprobs, atol=1e-4)
    chunked = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=10, max_batch_size=2)
    for g, c in zip(together, chunked.generate(prompts, greedy=True), strict=True):
        assert g.ids.tolist() == c.ids.tolist()


def test_same_seed_same_samples(policy: PolicyModel, prompts):
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=16)
    a = engine.generate(prompts, seed=11)
    b = engine.generate(prompts, seed=11)
    c = engine.generate(prompts, seed=12)
    for x, y in zip(a, b, strict=True):
        assert x.ids.tolist() == y.ids.tolist()
        np.testing.assert_array_equal(x.logprobs, y.logprobs)
    assert [x.ids.tolist() for x in a] != [z.ids.tolist() for z in c]


def test_seeded_generation_leaves_global_rng_alone(policy: PolicyModel, prompts):
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    engine.generate(prompts, seed=0)
    torch.testing.assert_close(torch.rand(3), expected)


def test_works_with_a_peft_model_and_restores_train_mode(tiny_model_dir: Path, prompts):
    policy = load_policy(tiny_model_dir, lora=LoraSettings(r=4, dropout=0.1))
    with torch.no_grad():  # make the adapter matter
        for name, p in policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    policy.train()
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=8, stop_token_ids=[10**9])
    gens = engine.generate(prompts[:2], greedy=True)
    assert policy.lm.training  # generate() switches to eval and back
    policy.eval()
    for prompt, g in zip(prompts[:2], gens, strict=True):
        ids, lps = greedy_by_hand(policy.lm, prompt, 8)
        assert g.ids.tolist() == ids
        np.testing.assert_allclose(g.logprobs, lps, atol=1e-4)
    sampled = engine.generate(prompts[:2], seed=2)
    for prompt, g in zip(prompts[:2], sampled, strict=True):
        np.testing.assert_allclose(g.logprobs, forward_logprobs(policy, prompt, g), atol=1e-4)


def test_ignores_sampling_settings_of_the_model_generation_config(policy: PolicyModel, prompts):
    lm = policy.lm
    saved = lm.generation_config
    try:
        lm.generation_config = saved.__class__(
            **{**saved.to_dict(), "top_k": 2, "repetition_penalty": 1.5, "temperature": 0.1}
        )
        gens = HFEngine(lm, policy.tokenizer, max_new_tokens=12).generate(prompts, seed=4)
    finally:
        lm.generation_config = saved
    for prompt, g in zip(prompts, gens, strict=True):
        np.testing.assert_allclose(g.logprobs, forward_logprobs(policy, prompt, g), atol=1e-4)


def test_bad_inputs(policy: PolicyModel):
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=2)
    assert engine.generate([]) == []
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]])
    with pytest.raises(ValueError, match="temperature"):
        HFEngine(policy.lm, policy.tokenizer, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        HFEngine(policy.lm, policy.tokenizer, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFEngine(policy.lm, policy.tokenizer, max_new_tokens=0)
    out = engine.generate([np.array([1, 5, 9])], greedy=True)  # numpy prompts are fine
    assert len(out[0].ids) == len(out[0].logprobs) <= 2
