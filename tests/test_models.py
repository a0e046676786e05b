"""hiper.models: the tiny model builder, the household corpus and PolicyModel / load_policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from hiper.demos import household_corpus  # noqa: E402
from hiper.models.policy import (  # noqa: E402
    POLICY_FILE,
    ForwardOut,
    LoraSettings,
    PolicyModel,
    load_policy,
    token_logprobs,
)
from hiper.models.tiny import build_tiny_model  # noqa: E402

LORA = LoraSettings(r=4, alpha=8.0, dropout=0.0)


# ---------------------------------------------------------------------------------------------
# helpers


def batch(tok, texts: list[str], pad: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if pad == "right" else slice(width - len(r), width)
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask


TEXTS = [
    "<|im_start|>user\nYour task is to: put a mug in cabinet 1.<|im_end|>\n<|im_start|>assistant\n"
    "<switch>SWITCH</switch>\n<subgoal>find and take a mug</subgoal>\n<action>go to desk 1</action>",
    "<|im_start|>user\nopen drawer 2<|im_end|>\n",
]


def manual_logprobs(lm, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[i] | ids[:i]) for one unpadded row [1, L], column 0 = 0."""
    logits = lm(input_ids=ids).logits.float()
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], dim=1)


def randomize_heads(policy: PolicyModel, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = policy.value_head.weight
        w.copy_(torch.randn(w.shape, generator=g))
        policy.value_head.bias.copy_(torch.randn(policy.value_head.bias.shape, generator=g))


def train_step(policy: PolicyModel, ids, mask, lr: float = 1e-2) -> None:
    policy.train()
    opt = torch.optim.Adam(
        [
            {"params": policy.actor_parameters(), "lr": lr},
            {"params": policy.critic_parameters(), "lr": lr},
        ]
    )
    out = policy(ids, mask)
    loss = -(out.logprobs * mask).sum() / mask.sum() + (out.values - 1.0).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    policy.eval()


# ---------------------------------------------------------------------------------------------
# tiny model and corpus


def test_build_tiny_model_is_deterministic(tmp_path: Path):
    corpus = household_corpus(n_episodes=6, seed=1)
    a = build_tiny_model(tmp_path / "a", corpus, vocab_size=512, hidden_size=32, num_heads=2)
    b = build_tiny_model(tmp_path / "b", corpus, vocab_size=512, hidden_size=32, num_heads=2)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = build_tiny_model(
        tmp_path / "c", corpus, vocab_size=512, hidden_size=32, num_heads=2, seed=1
    )
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_tiny_model_loads_through_auto_classes(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = lm.config
    assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings
    assert cfg.vocab_size % 64 == 0 and len(tok) <= cfg.vocab_size < len(tok) + 64
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (64, 2, 256)
    assert cfg.max_position_embeddings == 4096
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert lm.generation_config.eos_token_id == tok.eos_token_id
    assert lm.generation_config.pad_token_id == tok.pad_token_id
    assert len(tok) > 600  # the household domain's words get their own tokens
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert ids == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_build_tiny_model_rejects_bad_shapes(tmp_path: Path):
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_model(tmp_path, ["some text"], vocab_size=300, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="empty"):
        build_tiny_model(tmp_path, [], vocab_size=300)


# ---------------------------------------------------------------------------------------------
# forward pass


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> PolicyModel:
    return load_policy(tiny_model_dir)


def test_forward_logprobs_match_manual_log_softmax(policy: PolicyModel):
    tok = policy.tokenizer
    for pad in ("right", "left"):
        ids, mask = batch(tok, TEXTS, pad)
        with torch.no_grad():
            out = policy(ids, mask, with_entropy=True)
        assert isinstance(out, ForwardOut)
        assert out.logprobs.shape == ids.shape and out.logprobs.dtype == torch.float32
        assert out.entropy is not None and out.entropy.shape == ids.shape
        for i in range(len(TEXTS)):
            real = mask[i].bool()
            row = ids[i, real][None]
            with torch.no_grad():
                want = manual_logprobs(policy.lm, row)[0]
                logits = policy.lm(input_ids=row).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1)
            ent = torch.cat([torch.zeros(1), -(lp.exp() * lp).sum(-1)])
            torch.testing.assert_close(out.logprobs[i, real], want, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.entropy[i, real], ent, atol=1e-5, rtol=0)
            assert out.logprobs[i, real][0] == 0  # no prefix: column 0 (first real token) is 0
            assert torch.all(out.logprobs[i, ~real] == 0)
            assert torch.all(out.values[i, ~real] == 0)


def test_forward_only_computes_what_is_asked(policy: PolicyModel):
    ids, mask = batch(policy.tokenizer, TEXTS)
    with torch.no_grad():
        out = policy(ids, mask, with_values=False)
    assert out.values is None and out.entropy is None


def test_logprobs_from_skips_the_prompt_logits_and_agrees_with_the_full_forward(
    tiny_model_dir: Path,
):
    """``logprobs_from=k``: the output embedding sees positions k-1.. only; log-probs, entropies
    (and their gradients), reference log-probs and values agree with the full forward from
    column k on, and earlier columns are 0."""
    from hiper.train.batch import first_response_column

    policy = load_policy(tiny_model_dir, lora=LORA)
    randomize_heads(policy)
    with torch.no_grad():  # adapters away from zero, so the reference differs from the policy
        for n, p in policy.lm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    ids, mask = batch(policy.tokenizer, TEXTS)
    length = ids.shape[1]
    seen: list[int] = []
    head = policy.lm.get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, _args, logits: seen.append(logits.shape[1]))
    lora_params = [p for p in policy.lm.parameters() if p.requires_grad]

    def run(k: int):
        policy.zero_grad(set_to_none=True)
        out = policy(ids, mask, with_entropy=True, logprobs_from=k)
        grads = None
        if k <= 9:  # every column of a loss on columns 9.. is computed: the same gradient
            (out.logprobs * mask)[:, 9:].sum().backward()
            grads = [p.grad.clone() for p in lora_params]
        return out, grads, policy.reference_logprobs(ids, mask, logprobs_from=k)

    full, full_grads, full_ref = run(0)
    assert seen[-2:] == [length, length]  # policy, reference: every position
    assert (full.logprobs - full_ref).abs().max() > 1e-3
    for k in (2, 9, length - 1, length):
        out, grads, ref = run(k)
        assert seen[-2:] == [length - k + 1] * 2  # positions k-1 .. L-1
        for got, want in (
            (out.logprobs, full.logprobs),
            (out.entropy, full.entropy),
            (ref, full_ref),
        ):
            torch.testing.assert_close(got[:, k:], want[:, k:], atol=1e-5, rtol=0)
            assert torch.all(got[:, :k] == 0)
        assert torch.equal(out.values, full.values)  # the heads read every position
        if grads is not None:
            for g, w in zip(grads, full_grads, strict=True):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    # the values alone need no logits at all
    policy.values(ids, mask)
    assert seen[-1] == 0
    hook.remove()
    # where the responses start in a right-padded micro-batch: the shortest prompt's length
    response = torch.zeros(3, 6, dtype=torch.bool)
    response[0, 4:6] = True
    response[1, 2:3] = True
    assert first_response_column(response) == 2
    assert first_response_column(torch.zeros(2, 5, dtype=torch.bool)) == 5
    with pytest.raises(ValueError, match="logprobs_from"):
        policy(ids, mask, logprobs_from=-1)


def test_token_logprobs_alignment_by_hand():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 5.0  # position 0 predicts token 1 of the sequence
    lp, ent = token_logprobs(logits, torch.tensor([[0, 2, 1]]), with_entropy=True)
    assert lp[0, 0] == 0
    expected = torch.log_softmax(torch.tensor([0.0, 0.0, 5.0, 0.0]), -1)[2]
    torch.testing.assert_close(lp[0, 1], expected)
    torch.testing.assert_close(lp[0, 2], torch.log(torch.tensor(0.25)))
    torch.testing.assert_close(ent[0, 2], torch.log(torch.tensor(4.0)))


def test_values_start_at_zero(policy: PolicyModel):
    ids, mask = batch(policy.tokenizer, TEXTS)
    with torch.no_grad():
        out = policy(ids, mask)
    assert out.values.shape == (2, ids.shape[1], 2)
    assert torch.all(out.values == 0)
    assert policy.heads == ("high", "low") and policy.critic == "shared"


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_values_are_values_of_prefixes(tiny_model_dir: Path, critic: str):
    policy = load_policy(tiny_model_dir, critic=critic, heads=("high", "low", "term"))
    randomize_heads(policy)
    ids, mask = batch(policy.tokenizer, TEXTS[:1])
    k = ids.shape[1] // 2
    changed = ids.clone()
    changed[0, k] = (ids[0, k] + 7) % len(policy.tokenizer)
    with torch.no_grad():
        a = policy(ids, mask).values
        b = policy(changed, mask).values
    assert a.shape == (1, ids.shape[1], 3)
    torch.testing.assert_close(a[:, :k], b[:, :k], atol=1e-6, rtol=0)
    assert (a[:, k:] - b[:, k:]).abs().amax(-1).min() > 0  # every later value sees the change
    # the value at j only depends on tokens <= j: equals the value of the truncated prefix
    with torch.no_grad():
        prefix = policy(ids[:, : k + 1], mask[:, : k + 1]).values
    torch.testing.assert_close(prefix[0, k], a[0, k], atol=1e-5, rtol=0)


def test_shared_values_come_from_the_policys_last_hidden_state(policy: PolicyModel):
    randomize_heads(policy, seed=1)
    try:
        ids, mask = batch(policy.tokenizer, TEXTS[:1])
        with torch.no_grad():
            hidden = policy.lm(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            want = policy.value_head(hidden.float())
            got = policy(ids, mask).values
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    finally:
        with torch.no_grad():
            policy.value_head.weight.zero_()
            policy.value_head.bias.zero_()


def test_separate_critic_has_its_own_backbone(tiny_model_dir: Path):
    sep = load_policy(tiny_model_dir, critic="separate")
    assert sep.critic_backbone is not None
    actor = {id(p) for p in sep.actor_parameters()}
    critic = {id(p) for p in sep.critic_parameters()}
    assert not actor & critic
    assert len(critic) == len(list(sep.critic_backbone.parameters())) + 2
    shared = load_policy(tiny_model_dir)
    assert [id(p) for p in shared.critic_parameters()] == [
        id(p) for p in shared.value_head.parameters()
    ]


# ---------------------------------------------------------------------------------------------
# reference policy


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_reference_is_initial_policy_and_stays_fixed(tiny_model_dir: Path, lora):
    policy = load_policy(tiny_model_dir, lora=lora)
    ids, mask = batch(policy.tokenizer, TEXTS)
    with torch.no_grad():
        initial = policy(ids, mask).logprobs
    ref0 = policy.reference_logprobs(ids, mask)
    assert not ref0.requires_grad
    torch.testing.assert_close(ref0, initial, atol=1e-6, rtol=0)
    for _ in range(2):
        train_step(policy, ids, mask)
    with torch.no_grad():
        after = policy(ids, mask).logprobs
    assert (after - initial).abs().max() > 1e-3  # the policy moved
    torch.testing.assert_close(policy.reference_logprobs(ids, mask), ref0, atol=1e-6, rtol=0)
    if lora is not None:  # only adapters and heads are trainable
        names = [n for n, p in policy.lm.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)


def test_full_finetune_reference_copy_is_hidden_from_parameters(policy: PolicyModel):
    n_lm = sum(1 for _ in policy.lm.parameters())
    assert sum(1 for _ in policy.parameters()) == n_lm + 2
    assert not any(k.startswith("_ref") for k in policy.state_dict())


def test_reference_false_skips_the_copy(tiny_model_dir: Path):
    policy = load_policy(tiny_model_dir, reference=False)
    assert not policy.has_reference
    ids, mask = batch(policy.tokenizer, TEXTS)
    with pytest.raises(RuntimeError, match="reference"):
        policy.reference_logprobs(ids, mask)


# ---------------------------------------------------------------------------------------------
# save / load


@pytest.mark.parametrize(
    ("lora", "critic"),
    [(None, "shared"), (LORA, "shared"), (None, "separate"), (LORA, "separate")],
    ids=["full-shared", "lora-shared", "full-separate", "lora-separate"],
)
def test_save_load_round_trip(tiny_model_dir: Path, tmp_path: Path, lora, critic: str):
    policy = load_policy(tiny_model_dir, lora=lora, critic=critic)
    ids, mask = batch(policy.tokenizer, TEXTS)
    ref_before = policy.reference_logprobs(ids, mask)
    train_step(policy, ids, mask)
    with torch.no_grad():
        want = policy(ids, mask)
    assert want.values.abs().max() > 0
    saved = policy.save(tmp_path / "ckpt")
    meta = json.loads((saved / POLICY_FILE).read_text())
    assert meta["heads"] == ["high", "low"] and meta["critic"] == critic
    assert meta["base_path"] == str(tiny_model_dir.resolve())
    assert (meta["lora"] is None) == (lora is None)
    assert (saved / "adapter_config.json").exists() == (lora is not None)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folders left

    loaded = load_policy(saved)
    assert loaded.heads == policy.heads and loaded.critic == critic and loaded.lora == lora
    with torch.no_grad():
        got = loaded(ids, mask)
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.values, want.values, atol=1e-6, rtol=0)
    # the KL reference is still the original base model, not the trained weights
    torch.testing.assert_close(loaded.reference_logprobs(ids, mask), ref_before, atol=1e-6, rtol=0)

    # saving again over the same folder replaces it
    train_step(loaded, ids, mask)
    loaded.save(saved)
    again = load_policy(saved)
    with torch.no_grad():
        torch.testing.assert_close(
            again(ids, mask).logprobs, loaded(ids, mask).logprobs, atol=1e-6, rtol=0
        )
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


@pytest.mark.parametrize(
    ("lora", "critic"),
    [(None, "shared"), (None, "separate"), (LORA, "separate")],
    ids=["full-shared", "full-separate", "lora-separate"],
)
def test_values_false_loads_the_policy_alone(tiny_model_dir: Path, tmp_path: Path, lora, critic):
    """Fresh and saved: no value heads, no critic backbone (with reference=False, nothing but the
    LM); the same log-probs as the full policy; values, critic parameters and save refuse."""
    full = load_policy(tiny_model_dir, lora=lora, critic=critic)
    ids, mask = batch(full.tokenizer, TEXTS)
    train_step(full, ids, mask)
    saved = full.save(tmp_path / "p")
    with torch.no_grad():
        want = full(ids, mask, with_values=False).logprobs
    fresh = load_policy(tiny_model_dir, lora=lora, critic=critic, reference=False, values=False)
    for policy in (fresh, load_policy(saved, reference=False, values=False)):
        assert policy.value_head is None and policy.critic_backbone is None
        assert not policy.has_values and policy.critic == critic and policy.lora == lora
        lm_params = {id(p) for p in policy.lm.parameters()}
        assert {id(p) for p in policy.parameters()} == lm_params
        with pytest.raises(RuntimeError, match="values=False"):
            policy(ids, mask)  # with_values=True is the default
        with pytest.raises(RuntimeError, match="values=False"):
            policy.values(ids, mask)
        with pytest.raises(RuntimeError, match="values=False"):
            policy.critic_parameters()
        with pytest.raises(RuntimeError, match="values=False"):
            policy.save(tmp_path / "q")
    assert not (tmp_path / "q").exists()
    with torch.no_grad():
        got = load_policy(saved, reference=False, values=False)(ids, mask, with_values=False)
    torch.testing.assert_close(got.logprobs, want, atol=1e-6, rtol=0)


def test_lora_on_top_of_a_saved_full_policy(tiny_model_dir: Path, tmp_path: Path):
    sft = load_policy(tiny_model_dir, reference=False)
    ids, mask = batch(sft.tokenizer, TEXTS)
    train_step(sft, ids, mask)
    with torch.no_grad():
        sft_lp = sft(ids, mask).logprobs
    path = sft.save(tmp_path / "sft")
    rl = load_policy(path, lora=LORA)
    assert rl.lora == LORA and rl.meta["base_path"] == str(path)
    # the SFT weights are both the starting point and the reference
    torch.testing.assert_close(rl.reference_logprobs(ids, mask), sft_lp, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(rl(ids, mask).logprobs, sft_lp, atol=1e-6, rtol=0)


def test_saved_policy_rejects_conflicting_arguments(tiny_model_dir: Path, tmp_path: Path):
    path = load_policy(tiny_model_dir, reference=False).save(tmp_path / "p")
    with pytest.raises(ValueError, match="critic"):
        load_policy(path, critic="separate")
    with pytest.raises(ValueError, match="heads"):
        load_policy(path, heads=("high",))
    assert load_policy(path, critic="shared", heads=("high", "low")).critic == "shared"


def test_bfloat16_load(tiny_model_dir: Path):
    policy = load_policy(tiny_model_dir, dtype="bfloat16", reference=False)
    assert next(policy.lm.parameters()).dtype == torch.bfloat16
    ids, mask = batch(policy.tokenizer, TEXTS)
    with torch.no_grad():
        out = policy(ids, mask)
    assert out.logprobs.dtype == torch.float32 and out.values.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# errors


def test_missing_path_is_named(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_policy(missing)


def test_folder_without_config_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match=r"config\.json"):
        load_policy(tmp_path)


def test_not_a_causal_lm(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModel, AutoTokenizer

    AutoModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "backbone")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "backbone")
    with pytest.raises(ValueError, match="not a causal language model"):
        load_policy(tmp_path / "backbone")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"critic": "tandem"}, "unknown critic mode"),
        ({"heads": ()}, "heads must not be empty"),
        ({"heads": ("high", "high")}, "unique"),
        ({"heads": "high"}, "sequence"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"critic_path": "x"}, "critic_path"),
    ],
)
def test_bad_arguments(tiny_model_dir: Path, kwargs, match: str):
    with pytest.raises(ValueError, match=match):
        load_policy(tiny_model_dir, **kwargs)


def test_lora_settings_validate():
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(r=0)
    with pytest.raises(ValueError, match="dropout"):
        LoraSettings(dropout=1.0)
    s = LoraSettings(target_modules=["q_proj", "v_proj"])
    assert s.target_modules == ("q_proj", "v_proj")
    assert LoraSettings.from_dict(s.to_dict()) == s


def test_prefix_mean_by_hand():
    from hiper.models.policy import prefix_mean

    h = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]], [[9.0, 9.0], [2.0, 2.0], [4.0, 0.0]]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])  # row 1 is left-padded
    out = prefix_mean(h, mask)
    expect = [[[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]], [[0.0, 0.0], [2.0, 2.0], [3.0, 1.0]]]
    torch.testing.assert_close(out, torch.tensor(expect))


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_prefix_mean_values_are_values_of_prefixes_and_survive_a_save(
    tiny_model_dir: Path, tmp_path: Path, critic: str
):
    policy = load_policy(
        tiny_model_dir, critic=critic, heads=("high", "term"), value_readout="prefix_mean"
    )
    randomize_heads(policy)
    ids, mask = batch(policy.tokenizer, TEXTS[:1])
    k = ids.shape[1] // 2
    with torch.no_grad():
        a = policy(ids, mask).values
        prefix = policy(ids[:, : k + 1], mask[:, : k + 1]).values
        last = load_policy(tiny_model_dir, critic=critic, heads=("high", "term"))
        last.value_head.load_state_dict(policy.value_head.state_dict())
        plain = last(ids, mask).values
    torch.testing.assert_close(prefix[0, k], a[0, k], atol=1e-5, rtol=0)
    assert (a[0, 1:] - plain[0, 1:]).abs().max() > 1e-3  # a different read than the last state
    policy.save(tmp_path / "p")
    again = load_policy(tmp_path / "p")
    assert again.meta["value_readout"] == "prefix_mean"
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask).values, a, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="value_readout"):
        load_policy(tiny_model_dir, value_readout="first")


def test_value_scale_multiplies_the_heads_and_survives_a_save(tiny_model_dir: Path, tmp_path: Path):
    one = load_policy(tiny_model_dir, critic="separate", heads=("high",), reference=False)
    randomize_heads(one)
    ten = load_policy(
        tiny_model_dir, critic="separate", heads=("high",), reference=False, value_scale=10.0
    )
    ten.value_head.load_state_dict(one.value_head.state_dict())
    ids, mask = batch(one.tokenizer, TEXTS[:2])
    with torch.no_grad():
        torch.testing.assert_close(ten.values(ids, mask), 10.0 * one.values(ids, mask))
        torch.testing.assert_close(ten(ids, mask).values, ten.values(ids, mask))
    ten.save(tmp_path / "p")
    assert load_policy(tmp_path / "p").meta["value_scale"] == 10.0
    with pytest.raises(ValueError, match="value_scale"):
        load_policy(tiny_model_dir, value_scale=-1.0)


def test_activation_checkpointing_keeps_the_gradients(tiny_model_dir: Path):
    """Recomputing activations in the backward pass changes memory, not the gradients, in the
    LM and the separate critic."""
    ids = torch.tensor([[5, 9, 14, 3, 7, 11], [0, 0, 8, 2, 6, 4]])
    att = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])

    def grads(checkpointed: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        policy = load_policy(tiny_model_dir, critic="separate", heads=("high", "low"))
        with torch.no_grad():
            policy.value_head.weight.normal_()  # zero heads would pass no gradient back
        if checkpointed:
            assert policy.checkpoint_activations() == 2
            for model in (policy.lm, policy.critic_backbone):
                assert getattr(model, "is_activation_checkpointing", None) or (
                    model.is_gradient_checkpointing
                )
        policy.train()
        out = policy(ids, att, with_values=True, with_entropy=False)
        (out.logprobs[att.bool()].sum() + out.values.square().sum()).backward()
        return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    assert any(n.startswith("critic_backbone") for n in plain) and any("lm." in n for n in plain)
    for n, g in plain.items():
        assert torch.allclose(g, checkpointed[n], rtol=1e-5, atol=1e-7), n
