"""The trainable policy: a Hugging Face causal LM, value heads, LoRA and a KL reference.

:func:`load_policy` loads any causal LM with the real ``AutoModelForCausalLM.from_pretrained`` /
``AutoTokenizer.from_pretrained`` and wraps it in a :class:`PolicyModel`:

* **Value heads** (HAE.md §3): one ``torch.nn.Linear(hidden, len(heads))``, a column per head
  (``("high", "low")`` by default), initialised to zero weight and zero bias so every value starts
  at 0 (rewards are in [0, 1], so 0 is a sensible, noise-free initial baseline; and with a shared
  backbone a zero head sends no gradient into the backbone until the head has learned something,
  so the first value updates cannot disturb the policy). The heads always compute in float32
  (their input is cast), whatever the model dtype.

  - ``critic="shared"`` (the paper's design): the heads read the policy backbone's last hidden
    state, captured on its way into the output embedding (``lm_head``) by a forward pre-hook, so
    one forward pass gives both logits and values.
  - ``critic="separate"`` (the original code's design): a second backbone,
    ``AutoModel.from_pretrained(critic_path or path)``, with the heads on its last hidden state.
    It must share the policy's tokenizer.

* **LoRA** (:class:`LoraSettings`): ``peft.get_peft_model(lm, LoraConfig(task_type="CAUSAL_LM",
  ...))``; a separate critic backbone gets the same LoRA settings (``task_type=
  "FEATURE_EXTRACTION"``). Only adapters (and heads) are trainable.

* **Reference policy** for the KL term: with LoRA, the same model with adapters disabled (free);
  without LoRA, a frozen deep copy of the initial weights, made at load time, which costs one more
  copy of the weights (no gradients, no optimizer state): e.g. ~3 GiB for a 1.5B model in
  bfloat16. ``load_policy(..., reference=False)`` skips it; ``reference="<path>"`` loads the
  reference weights from another checkpoint (e.g. an SFT model) instead.

* **The policy alone** (evaluation, generation): ``load_policy(..., reference=False,
  values=False)`` loads neither the reference copy nor the value heads and separate critic
  backbone; such a policy generates and gives log-probs, but has no values, critic parameters
  or ``save`` (saving it would lose the critic).

* **Saving** (:meth:`PolicyModel.save`) writes, into a temporary folder renamed into place: the
  model (full weights, or only the LoRA adapter) and tokenizer with ``save_pretrained``, the heads
  as ``value_heads.safetensors``, the separate critic backbone under ``critic/``, and
  ``hiper_policy.json`` (heads, critic mode, LoRA settings, base and reference paths).
  :func:`load_policy` on such a folder restores all of it. LoRA adapters are *not* merged: the base
  is loaded from the recorded base path and the adapter attached with
  ``PeftModel.from_pretrained(..., is_trainable=True)``, so training can continue and the reference
  (adapters disabled) stays the original base. A full fine-tune records the path of its reference
  weights, so a resumed run keeps its KL anchor instead of anchoring on the resumed weights.

Forward passes build ``position_ids`` from the attention mask (``cumsum - 1``), so left- and
right-padded batches give the same per-token results as unpadded rows. Log-probabilities and
entropies are computed in float32 from the logits (``log_softmax`` + ``gather``), in row chunks,
and only what is asked for: callers that read only the responses pass ``logprobs_from`` and the
output embedding skips the prompt.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hiper.models.named import resolve_model_path

__all__ = [
    "CRITIC_MODES",
    "POLICY_FILE",
    "ForwardOut",
    "LoraSettings",
    "PolicyModel",
    "check_device",
    "check_device_name",
    "check_model_folder",
    "load_policy",
    "position_ids_from_mask",
    "token_logprobs",
]

POLICY_FILE = "hiper_policy.json"
HEADS_FILE = "value_heads.safetensors"
CRITIC_DIR = "critic"
FORMAT_VERSION = 1
CRITIC_MODES: tuple[str, ...] = ("shared", "separate")
DEFAULT_HEADS: tuple[str, ...] = ("high", "low")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# elements of the float32 log-softmax temporary per chunk (rows are chunked to stay below this)
_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (``peft.LoraConfig``): rank, alpha, dropout and target modules.

    ``target_modules`` is a tuple of module-name suffixes (``("q_proj", "v_proj")``) or a string
    peft understands (``"all-linear"``: every linear layer except the output embedding).
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = "all-linear"

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, int | float) or self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if not isinstance(targets, str):
            targets = tuple(targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(
                    f"target_modules must be a non-empty list of module names, got {targets!r}"
                )
            object.__setattr__(self, "target_modules", targets)
        elif not targets:
            raise ValueError("target_modules must not be empty")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not isinstance(self.target_modules, str):
            d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraSettings:
        targets = d.get("target_modules", "all-linear")
        return cls(
            r=int(d["r"]),
            alpha=float(d["alpha"]),
            dropout=float(d["dropout"]),
            target_modules=targets if isinstance(targets, str) else tuple(targets),
        )

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        from peft import LoraConfig

        targets = self.target_modules
        return LoraConfig(
            task_type=task_type,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
        )


@dataclass
class ForwardOut:
    """Per-token outputs of :meth:`PolicyModel.forward`, all aligned with ``input_ids``.

    ``logprobs[:, i] = log p(input_ids[:, i] | input_ids[:, :i])`` (float32; column 0, padding and
    the first real token of a left-padded row are 0), ``entropy[:, i]`` the entropy of that same
    distribution (or None), ``values[:, j, k]`` head ``k``'s value of the prefix ending at token
    ``j`` (float32, 0 at padding; or None).
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor | None = None
    values: torch.Tensor | None = None


#: What a value head reads at position i. ``last``: the backbone's hidden state at i (the usual
#: token-level critic). ``prefix_mean``: the mean of the hidden states at positions 0..i (real
#: tokens only), still a function of the prefix alone. A small model trained from scratch keeps
#: almost no state in the hidden state of a fixed token such as the chat template's
#: ``<|im_start|>assistant`` suffix, where V^H and V^term are read: measured on the quickstart, the
#: heads read there explained 0.00-0.01 of the return variance after 8 PPO iterations, while a
#: prefix mean sees every observation token directly.
VALUE_READOUTS = {"last": "hidden state at the position", "prefix_mean": "mean over the prefix"}


def prefix_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = mean of hidden[b, j]`` over the real tokens ``j <= i`` (0 before the first)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * m).cumsum(dim=1)
    count = m.cumsum(dim=1).clamp(min=1.0)
    return total / count


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row (0 at padding), for left or right padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


def token_logprobs(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    with_entropy: bool = False,
    temperature: float = 1.0,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shifted per-token log-probs (and entropies) in float32; see :class:`ForwardOut`.

    ``logits[:, j]`` are the logits at position ``offset + j`` and predict
    ``input_ids[:, offset + j + 1]``; ``offset > 0`` is a suffix of the positions (the outputs
    stay aligned with ``input_ids``, 0 in columns ``0 .. offset``). ``temperature`` gives the
    log-probs of the tempered distribution ``softmax(logits / temperature)``, the one a sampler at
    that temperature draws from. Rows are processed in chunks so the float32 ``log_softmax``
    temporary stays bounded.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    b, width, vocab = logits.shape
    length = input_ids.shape[1]
    if offset < 0 or offset + width != length:
        raise ValueError(
            f"logits cover positions {offset}..{offset + width - 1}, input_ids has {length}"
        )
    if width < 2:
        zeros = logits.new_zeros((b, length), dtype=torch.float32)
        return zeros, (zeros.clone() if with_entropy else None)
    rows = max(1, _CHUNK_ELEMENTS // max(1, (width - 1) * vocab))
    targets = input_ids[:, offset + 1 :].unsqueeze(-1)
    lps, ents = [], []
    for start in range(0, b, rows):
        chunk = logits[start : start + rows, :-1].float()
        if temperature != 1.0:
            chunk = chunk / temperature
        lp = torch.log_softmax(chunk, dim=-1)
        lps.append(lp.gather(-1, targets[start : start + rows]).squeeze(-1))
        if with_entropy:
            ents.append(-(lp.exp() * lp).sum(-1))
    pad = logits.new_zeros((b, offset + 1), dtype=torch.float32)
    logprobs = torch.cat([pad, torch.cat(lps)], dim=1)
    entropy = torch.cat([pad, torch.cat(ents)], dim=1) if with_entropy else None
    if attention_mask is not None:
        m = attention_mask.bool()
        valid = torch.cat([torch.zeros_like(m[:, :1]), m[:, 1:] & m[:, :-1]], dim=1)
        logprobs = logprobs.masked_fill(~valid, 0.0)
        if entropy is not None:
            entropy = entropy.masked_fill(~valid, 0.0)
    return logprobs, entropy


class PolicyModel(nn.Module):
    """A causal LM policy with value heads; build it with :func:`load_policy`.

    Attributes: ``lm`` (the HF model, a ``peft.PeftModel`` with LoRA), ``tokenizer``, ``heads``
    (head names, one value column each), ``critic`` (``"shared"`` | ``"separate"``),
    ``value_head`` (the ``nn.Linear``; None with ``values=False``), ``critic_backbone``
    (separate mode only, else None; always None with ``values=False``), ``lora``
    (:class:`LoraSettings` or None).

    ``values=False``: the policy alone, for evaluation: no value heads and no critic backbone
    (``critic`` still names the mode it was trained with); asking it for values, critic
    parameters or a ``save`` raises.
    """

    def __init__(
        self,
        lm: nn.Module,
        tokenizer: Any,
        *,
        heads: Sequence[str] = DEFAULT_HEADS,
        critic: str = "shared",
        critic_backbone: nn.Module | None = None,
        value_head: nn.Linear | None = None,
        reference: nn.Module | None = None,
        lora: LoraSettings | None = None,
        meta: dict[str, Any] | None = None,
        values: bool = True,
    ) -> None:
        super().__init__()
        heads = _check_heads(heads)
        _check_critic(critic)
        if not values and (critic_backbone is not None or value_head is not None):
            raise ValueError("values=False takes no critic backbone and no value head")
        if values and (critic == "separate") != (critic_backbone is not None):
            raise ValueError("critic='separate' needs a critic backbone, 'shared' must have none")
        self.lm = lm
        self.tokenizer = tokenizer
        self.heads = heads
        self.critic = critic
        self.lora = lora
        self.critic_backbone = critic_backbone
        hidden = _hidden_size(critic_backbone if critic_backbone is not None else lm)
        if values and value_head is None:  # (values=False: the policy alone, no head)
            value_head = nn.Linear(hidden, len(heads), dtype=torch.float32, device=_device(lm))
            nn.init.zeros_(value_head.weight)
            nn.init.zeros_(value_head.bias)
        if value_head is not None and (
            value_head.in_features != hidden or value_head.out_features != len(heads)
        ):
            raise ValueError(
                f"value head is {value_head.in_features}->{value_head.out_features}, expected "
                f"{hidden}->{len(heads)}"
            )
        self.value_head = value_head
        # not a registered submodule: it must not appear in parameters() or state_dict(), and
        # stays in eval mode; _apply keeps it on the policy's device/dtype.
        self._ref = [reference] if reference is not None else []
        if reference is not None:
            reference.eval()
            reference.requires_grad_(False)
        self.meta: dict[str, Any] = dict(meta or {})

    def checkpoint_activations(self) -> int:
        """Recompute each decoder layer's activations in the backward pass instead of keeping
        them (Hugging Face's gradient checkpointing, non-reentrant), in the LM and a separate
        critic backbone: less memory for long sequences, about one more forward of time. The
        gradients are unchanged. Returns how many models it was enabled in."""
        done = 0
        for model in (self.lm, self.critic_backbone):
            if model is not None and getattr(model, "supports_gradient_checkpointing", False):
                # transformers 5.x renamed it; older versions (a GPU machine's) have the old name
                enable = getattr(model, "activation_checkpointing_enable", None)
                enable = enable or model.gradient_checkpointing_enable
                enable({"use_reentrant": False})
                done += 1
        return done

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return _device(self.lm)

    @property
    def has_reference(self) -> bool:
        return self.lora is not None or bool(self._ref)

    @property
    def has_values(self) -> bool:
        """False for a policy loaded with ``values=False`` (no value heads, no critic)."""
        return self.value_head is not None

    def _require_values(self, what: str) -> None:
        if self.value_head is None:
            raise RuntimeError(
                f"this policy was loaded with values=False: it has no value heads or critic "
                f"({what} needs them; load it with values=True)"
            )

    def _apply(self, fn, recurse=True):  # keep the (unregistered) reference copy in step
        super()._apply(fn, recurse)
        for ref in self._ref:
            ref._apply(fn)
        return self

    # ------------------------------------------------------------------ forward passes

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        with_values: bool = True,
        with_entropy: bool = False,
        temperature: float = 1.0,
        logprobs_from: int = 0,
    ) -> ForwardOut:
        """Per-token log-probs (+ entropies, + values) of ``input_ids``; see :class:`ForwardOut`.
        Log-probs and entropies are those of the policy sampled at ``temperature``.

        ``logprobs_from``: log-probs and entropies are computed only for columns
        ``>= logprobs_from`` (earlier columns are 0): the output embedding then runs on positions
        ``logprobs_from - 1 ..`` only. With a 49k-token vocabulary the logits of a prompt cost
        more than a fifth of the forward, and nobody reads them: pass the first response column
        of a right-padded batch (:func:`hiper.train.batch.first_response_column`). Values are
        computed at every position either way."""
        _check_batch(input_ids, attention_mask)
        if with_values:
            self._require_values("forward(with_values=True)")
        positions = position_ids_from_mask(attention_mask)
        need_hidden = with_values and self.critic == "shared"
        start = _logits_start(logprobs_from, input_ids.shape[1])
        logits, hidden = _run_lm(
            self.lm, input_ids, attention_mask, positions, need_hidden, logits_from=start
        )
        logprobs, entropy = token_logprobs(
            logits,
            input_ids,
            attention_mask,
            with_entropy=with_entropy,
            temperature=temperature,
            offset=start,
        )
        del logits
        values = self._values(input_ids, attention_mask, positions, hidden) if with_values else None
        return ForwardOut(logprobs=logprobs, entropy=entropy, values=values)

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Only the values ``[B, L, len(heads)]`` (as ``ForwardOut.values``): a separate critic
        runs its own backbone alone, a shared one the policy's backbone."""
        _check_batch(input_ids, attention_mask)
        self._require_values("values()")
        positions = position_ids_from_mask(attention_mask)
        hidden = None
        if self.critic == "shared":  # the hidden states only: no logits at all
            length = input_ids.shape[1]
            _, hidden = _run_lm(self.lm, input_ids, attention_mask, positions, True, length)
        return self._values(input_ids, attention_mask, positions, hidden)

    def _values(self, input_ids, attention_mask, positions, hidden) -> torch.Tensor:
        """The heads on the backbone's hidden states, read as ``meta["value_readout"]`` says."""
        if hidden is None:
            assert self.critic_backbone is not None
            hidden = self.critic_backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                use_cache=False,
            ).last_hidden_state
        hidden = hidden.float()
        if self.meta.get("value_readout", "last") == "prefix_mean":
            hidden = prefix_mean(hidden, attention_mask)
        values = self.value_head(hidden) * float(self.meta.get("value_scale", 1.0))
        return values * attention_mask.unsqueeze(-1).to(values.dtype)

    @torch.no_grad()
    def reference_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        temperature: float = 1.0,
        *,
        logprobs_from: int = 0,
    ) -> torch.Tensor:
        """Log-probs under the reference policy at ``temperature`` (aligned like
        ``ForwardOut.logprobs``; ``logprobs_from`` as in :meth:`forward`)."""
        _check_batch(input_ids, attention_mask)
        positions = position_ids_from_mask(attention_mask)
        start = _logits_start(logprobs_from, input_ids.shape[1])
        if self.lora is not None:
            with self.lm.disable_adapter():
                logits, _ = _run_lm(self.lm, input_ids, attention_mask, positions, False, start)
        elif self._ref:
            logits, _ = _run_lm(self._ref[0], input_ids, attention_mask, positions, False, start)
        else:
            raise RuntimeError(
                "this policy was loaded with reference=False: it has no reference model "
                "(load it with reference=True to get reference log-probs)"
            )
        return token_logprobs(
            logits, input_ids, attention_mask, temperature=temperature, offset=start
        )[0]

    # ------------------------------------------------------------------ parameter groups

    def actor_parameters(self) -> list[nn.Parameter]:
        """Trainable policy parameters (LoRA adapters only with LoRA). With a shared critic this
        includes the shared backbone, which the value loss also trains."""
        return [p for p in self.lm.parameters() if p.requires_grad]

    def critic_parameters(self) -> list[nn.Parameter]:
        """The value heads, plus the trainable critic backbone parameters in separate mode."""
        self._require_values("critic_parameters()")
        params: list[nn.Parameter] = []
        if self.critic_backbone is not None:
            params += [p for p in self.critic_backbone.parameters() if p.requires_grad]
        return params + list(self.value_head.parameters())

    # ------------------------------------------------------------------ persistence

    def policy_config(self) -> dict[str, Any]:
        """What ``hiper_policy.json`` holds."""
        self._require_values("saving")
        return {
            "format_version": FORMAT_VERSION,
            "heads": list(self.heads),
            "critic": self.critic,
            "lora": self.lora.to_dict() if self.lora is not None else None,
            "base_path": self.meta.get("base_path"),
            "critic_base_path": self.meta.get("critic_base_path"),
            "reference_path": self.meta.get("reference_path"),
            "dtype": self.meta.get("dtype", _dtype_name(_dtype(self.lm))),
            "value_readout": self.meta.get("value_readout", "last"),
            "value_scale": self.meta.get("value_scale", 1.0),
            "value_head": {
                "in_features": self.value_head.in_features,
                "out_features": self.value_head.out_features,
            },
        }

    def save(
        self, directory: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None
    ) -> Path:
        """Write the policy to ``directory`` (replaced if it exists) and return its path.

        Everything is written into a temporary sibling folder first, which is then renamed into
        place (an existing folder is moved aside first and removed afterwards), so a crash never
        leaves a half-written ``directory``. ``state_dict``: the policy's whole state (the keys
        of ``self.state_dict()``) written instead of its modules' own, for a model whose
        modules hold only shards (``hiper.train.distributed.full_state_dict`` gathers it).
        """
        from safetensors.torch import save_file

        def part(prefix: str) -> dict[str, torch.Tensor] | None:
            if state_dict is None:
                return None
            return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}

        self._require_values("saving")  # a policy without its critic would be saved incomplete
        target = Path(directory).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            self.lm.save_pretrained(tmp, state_dict=part("lm."))
            self.tokenizer.save_pretrained(tmp)
            if self.critic_backbone is not None:
                self.critic_backbone.save_pretrained(
                    tmp / CRITIC_DIR, state_dict=part("critic_backbone.")
                )
            heads = part("value_head.") or self.value_head.state_dict()
            state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in heads.items()}
            save_file(state, str(tmp / HEADS_FILE), metadata={"heads": json.dumps(self.heads)})
            (tmp / POLICY_FILE).write_text(json.dumps(self.policy_config(), indent=2) + "\n")
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / target.name)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


# ---------------------------------------------------------------------------------------------
# Loading


def load_policy(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    lora: LoraSettings | None = None,
    critic: str | None = None,
    critic_path: str | os.PathLike | None = None,
    heads: Sequence[str] | None = None,
    reference: bool | str | os.PathLike = True,
    value_readout: str | None = None,
    value_scale: float | None = None,
    values: bool = True,
) -> PolicyModel:
    """Load a causal LM (a hub id or local folder) or a folder written by :meth:`PolicyModel.save`.

    Fresh load: ``critic`` defaults to ``"shared"`` and ``heads`` to ``("high", "low")``; the heads
    start at zero. ``lora`` wraps the LM (and a separate critic) in LoRA adapters.

    Saved policy (a folder with ``hiper_policy.json``): heads, critic mode, LoRA adapter, value
    heads and critic backbone are restored; ``critic``/``heads``/``lora``/``critic_path`` may be
    left at None or must match what was saved. One exception: passing ``lora`` for a policy saved
    *without* LoRA starts LoRA on top of the saved weights (e.g. RL with LoRA from a fully
    fine-tuned SFT checkpoint); the saved weights are then the base and the reference.

    ``reference``: True (default) gives the reference policy described in the module docstring;
    False skips the frozen copy of a non-LoRA policy (``reference_logprobs`` then raises); a path
    loads the reference weights from that checkpoint instead (non-LoRA only).

    ``value_readout`` (see :data:`VALUE_READOUTS`; default ``"last"``, a saved policy keeps its
    own): what the value heads read at a position. ``value_scale`` (default 1; a saved policy
    keeps its own): the heads' outputs are multiplied by it, so they learn returns in units of
    ``value_scale`` (e.g. the success reward). Adam moves a head's output by about ``lr`` times
    its input's size per step whatever the target's scale, so returns of size 10 read in units
    of 1 need ~10x the steps to fit.

    ``values``: False loads the policy alone, for evaluation or generation: no value heads and
    no separate critic backbone are built or read (a saved policy's ``value_heads.safetensors``
    and ``critic/`` are left on disk); with ``reference=False`` too, only the language model's
    weights are in memory. See :class:`PolicyModel` for what such a policy cannot do.

    The policy is returned in eval mode (like ``from_pretrained``); call ``.train()`` for updates.
    """
    torch_dtype = _resolve_dtype(dtype)
    check_device(device)
    if value_readout is not None and value_readout not in VALUE_READOUTS:
        raise ValueError(
            f"unknown value_readout {value_readout!r}; expected one of {tuple(VALUE_READOUTS)}"
        )
    path_str = _check_model_path(path, "model")
    saved = _saved_config(path_str)
    if saved is not None:
        policy = _load_saved(
            Path(path_str),
            saved,
            device,
            torch_dtype,
            lora,
            critic,
            critic_path,
            heads,
            reference,
            values,
        )
        policy.meta["value_readout"] = value_readout or saved.get("value_readout", "last")
        policy.meta["value_scale"] = _scale(value_scale or saved.get("value_scale", 1.0))
        return policy
    critic = "shared" if critic is None else critic
    _check_critic(critic)
    heads = _check_heads(DEFAULT_HEADS if heads is None else heads)
    if critic == "shared" and critic_path is not None:
        raise ValueError("critic_path is only used with critic='separate'")
    _check_causal_lm(path_str)
    check_model_folder(path_str)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path_str)
    lm = _load_causal_lm(path_str, torch_dtype, device)
    ref, reference_path = _make_reference(lm, reference, lora, torch_dtype, device, path_str)
    if lora is not None:
        from peft import get_peft_model

        lm = get_peft_model(lm, lora.peft_config("CAUSAL_LM"))
    backbone, critic_base = None, None
    if critic == "separate":
        critic_base = (
            _check_model_path(critic_path, "critic") if critic_path is not None else path_str
        )
        if critic_base != path_str:
            _check_same_tokenizer(tokenizer, critic_base)
    if critic == "separate" and values:
        backbone = _load_backbone(critic_base, torch_dtype, device)
        if lora is not None:
            from peft import get_peft_model

            backbone = get_peft_model(backbone, lora.peft_config("FEATURE_EXTRACTION"))
    meta = {
        "base_path": path_str,
        "critic_base_path": critic_base,
        "reference_path": reference_path,
        "dtype": _dtype_name(torch_dtype),
        "value_readout": value_readout or "last",
        "value_scale": _scale(value_scale or 1.0),
    }
    policy = PolicyModel(
        lm,
        tokenizer,
        heads=heads,
        critic=critic,
        critic_backbone=backbone,
        reference=ref,
        lora=lora,
        meta=meta,
        values=values,
    )
    return policy.to(device).eval()


def _load_saved(
    root: Path,
    saved: dict[str, Any],
    device,
    torch_dtype: torch.dtype,
    lora: LoraSettings | None,
    critic: str | None,
    critic_path,
    heads: Sequence[str] | None,
    reference,
    values: bool = True,
) -> PolicyModel:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    saved_heads = tuple(saved["heads"])
    saved_critic = saved["critic"]
    saved_lora = LoraSettings.from_dict(saved["lora"]) if saved.get("lora") else None
    if heads is not None and tuple(heads) != saved_heads:
        raise ValueError(f"{root} was saved with heads {saved_heads}, not {tuple(heads)}")
    if critic is not None and critic != saved_critic:
        raise ValueError(f"{root} was saved with critic={saved_critic!r}, not {critic!r}")
    if critic_path is not None:
        raise ValueError(
            f"critic_path cannot be given for a saved policy ({root} restores its own critic)"
        )
    if saved_lora is not None and lora is not None and lora != saved_lora:
        raise ValueError(f"{root} was saved with LoRA {saved_lora}, not {lora}")
    _check_tokenizer_files(root)
    tokenizer = AutoTokenizer.from_pretrained(root)
    value_head = None
    if values:
        heads_state = load_file(str(root / HEADS_FILE))
        value_head = nn.Linear(
            heads_state["weight"].shape[1], heads_state["weight"].shape[0], dtype=torch.float32
        )
        value_head.load_state_dict(heads_state)

    backbone = None
    critic_base = saved.get("critic_base_path")
    if saved_lora is not None:
        # resume LoRA: base from the recorded path, adapter from the folder (kept unmerged)
        from peft import PeftModel

        base_path = _check_model_path(saved["base_path"], "recorded base model")
        if reference not in (True, False):
            raise ValueError(
                "reference=<path> is not supported with LoRA (the base is the reference)"
            )
        lm = _load_causal_lm(base_path, torch_dtype, device)
        lm = PeftModel.from_pretrained(lm, str(root), is_trainable=True)
        ref, reference_path = None, None
        if saved_critic == "separate" and values:
            critic_base = _check_model_path(critic_base, "recorded critic base model")
            backbone = _load_backbone(critic_base, torch_dtype, device)
            backbone = PeftModel.from_pretrained(
                backbone, str(root / CRITIC_DIR), is_trainable=True
            )
        lora_used = saved_lora
    else:
        lm = _load_causal_lm(str(root), torch_dtype, device)
        if saved_critic == "separate" and values:
            backbone = _load_backbone(str(root / CRITIC_DIR), torch_dtype, device)
        if lora is not None:
            # start LoRA on top of the saved full weights: they become base and reference
            from peft import get_peft_model

            lm = get_peft_model(lm, lora.peft_config("CAUSAL_LM"))
            if backbone is not None:
                backbone = get_peft_model(backbone, lora.peft_config("FEATURE_EXTRACTION"))
            base_path = str(root)
            critic_base = str(root / CRITIC_DIR) if saved_critic == "separate" else None
            ref, reference_path = None, None
            if reference not in (True, False):
                raise ValueError("reference=<path> is not supported with LoRA")
        else:
            base_path = saved["base_path"]
            ref, reference_path = _resume_reference(
                lm, saved, reference, torch_dtype, device, str(root)
            )
        lora_used = lora
    meta = {
        "base_path": base_path,
        "critic_base_path": critic_base,
        "reference_path": reference_path,
        "dtype": _dtype_name(torch_dtype),
    }
    policy = PolicyModel(
        lm,
        tokenizer,
        heads=saved_heads,
        critic=saved_critic,
        critic_backbone=backbone,
        value_head=value_head,
        reference=ref,
        lora=lora_used,
        meta=meta,
        values=values,
    )
    return policy.to(device).eval()


def _make_reference(lm, reference, lora, torch_dtype, device, path_str):
    """(frozen reference model or None, path of the reference weights or None) for a fresh load."""
    if lora is not None:
        if reference not in (True, False):
            raise ValueError(
                "reference=<path> is not supported with LoRA (the base model with adapters "
                "disabled is the reference)"
            )
        return None, None
    if reference is False:
        return None, path_str  # no copy, but a resumed run can still load these weights
    if reference is True:
        return _freeze(copy.deepcopy(lm)), path_str
    ref_path = _check_model_path(reference, "reference")
    _check_causal_lm(ref_path)
    return _freeze(_load_causal_lm(ref_path, torch_dtype, device)), ref_path


def _resume_reference(lm, saved, reference, torch_dtype, device, root):
    if reference is False:
        return None, saved.get("reference_path")
    if reference is not True:
        ref_path = _check_model_path(reference, "reference")
        return _freeze(_load_causal_lm(ref_path, torch_dtype, device)), ref_path
    ref_path = saved.get("reference_path")
    if ref_path and _exists_or_hub(ref_path):
        return _freeze(_load_causal_lm(ref_path, torch_dtype, device)), ref_path
    warnings.warn(
        f"the reference weights recorded in {root}/{POLICY_FILE} ({ref_path!r}) are not "
        "available; using a frozen copy of the loaded weights as the KL reference",
        stacklevel=3,
    )
    return _freeze(copy.deepcopy(lm)), root


# ---------------------------------------------------------------------------------------------
# Helpers


def _logits_start(logprobs_from: int, length: int) -> int:
    """The first position whose logits the log-probs of columns ``>= logprobs_from`` need."""
    if isinstance(logprobs_from, bool) or not isinstance(logprobs_from, int) or logprobs_from < 0:
        raise ValueError(f"logprobs_from must be an integer >= 0, got {logprobs_from!r}")
    return min(max(logprobs_from - 1, 0), max(length - 1, 0))


def _run_lm(lm, input_ids, attention_mask, positions, need_hidden: bool, logits_from: int = 0):
    """(logits of positions ``logits_from ..``, last hidden state of every position or None)
    from one forward pass of a causal LM.

    The last hidden state is captured by a forward pre-hook on the output embedding: it is
    exactly the tensor the logits are computed from, for any architecture, and nothing else
    (no per-layer hidden states) is kept. ``logits_from > 0``: the same hook hands the output
    embedding only the positions from ``logits_from`` on, so the logits (and whatever the model
    applies to them, e.g. a soft cap) are computed for that suffix alone.
    """
    captured: list[torch.Tensor] = []
    handle = None
    if need_hidden or logits_from > 0:
        head = lm.get_output_embeddings()
        if head is None:
            raise RuntimeError(f"{type(lm).__name__} has no output embedding to read values from")

        def hook(_module, args):
            captured.append(args[0])
            if logits_from > 0:
                return (args[0][:, logits_from:], *args[1:])
            return None

        handle = head.register_forward_pre_hook(hook)
    try:
        out = lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
        )
    finally:
        if handle is not None:
            handle.remove()
    hidden = captured[-1] if need_hidden and captured else None
    if need_hidden and (hidden is None or hidden.shape[:2] != input_ids.shape):
        raise RuntimeError("could not capture the last hidden state for the value heads")
    logits = out.logits
    if logits.shape[1] != input_ids.shape[1] - logits_from:
        raise RuntimeError(
            f"{type(lm).__name__} returned logits for {logits.shape[1]} positions, expected "
            f"{input_ids.shape[1] - logits_from}"
        )
    return logits, hidden


def _scale(x) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0 < x < float("inf"):
        raise ValueError(f"value_scale must be a positive number, got {x!r}")
    return float(x)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def _check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be [B, L]; got {tuple(input_ids.shape)} and "
            f"{tuple(attention_mask.shape)}"
        )


def _check_heads(heads: Sequence[str]) -> tuple[str, ...]:
    if isinstance(heads, str):
        raise ValueError(f"heads must be a sequence of head names, not the string {heads!r}")
    heads = tuple(heads)
    if not heads:
        raise ValueError("heads must not be empty: name at least one value head, e.g. ('high',)")
    if not all(isinstance(h, str) and h for h in heads):
        raise ValueError(f"head names must be non-empty strings, got {heads!r}")
    if len(set(heads)) != len(heads):
        raise ValueError(f"head names must be unique, got {heads!r}")
    return heads


def _check_critic(critic: str) -> None:
    if critic not in CRITIC_MODES:
        raise ValueError(f"unknown critic mode {critic!r}; expected one of {CRITIC_MODES}")


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return int(config.hidden_size)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith(".")


def _exists_or_hub(name: str) -> bool:
    return Path(name).exists() or _looks_like_hub_id(name)


def _check_model_path(path, what: str) -> str:
    """A local folder (resolved), a named model's prepared folder (prepared on first use, see
    :mod:`hiper.models.named`) or a hub id; FileNotFoundError naming a missing local path."""
    if path is None:
        raise FileNotFoundError(f"no {what} path given")
    name = resolve_model_path(path)
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"{what} path {name!r} is a file, expected a model folder")
        return str(local.resolve())
    if _looks_like_hub_id(name) and not name.startswith(("~", "/")):
        return name  # loaded from the hub cache; from_pretrained reports what is missing
    raise FileNotFoundError(f"{what} path {name!r} does not exist")


#: Files that hold a model's weights (one of them, or a shard index) and a tokenizer's vocabulary.
_WEIGHT_FILES = ("model*.safetensors", "pytorch_model*.bin", "*.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "*.tiktoken")


def check_model_folder(path_str: str) -> None:
    """A local model folder holds weights and a tokenizer (a hub id is left to from_pretrained);
    FileNotFoundError naming the folder and the files expected."""
    folder = Path(path_str)
    if not folder.is_dir():
        return
    if not any(any(folder.glob(pattern)) for pattern in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"model folder {path_str} has no weights (expected model.safetensors, "
            "pytorch_model.bin or a sharded *.index.json)"
        )
    _check_tokenizer_files(folder)


def _check_tokenizer_files(folder: Path) -> None:
    # without them AutoTokenizer still loads, a tokenizer of one token: every prompt would be empty
    if folder.is_dir() and not any(any(folder.glob(pattern)) for pattern in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"model folder {folder} has no tokenizer files (expected tokenizer.json, "
            "tokenizer.model or vocab.json beside tokenizer_config.json)"
        )


def check_device_name(device: str) -> None:
    """ValueError unless ``device`` is spelled as a torch device (cpu, cuda, cuda:1, mps, ...)."""
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch device such as cpu, cuda, cuda:1 or mps, got {device!r}"
        ) from None


def check_device(device: str | torch.device, key: str = "device") -> torch.device:
    """``device`` as a torch.device; ValueError (naming ``key``) when this machine lacks it."""
    if not isinstance(device, torch.device):
        check_device_name(device)
    dev = torch.device(device)
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if dev.type != "cpu" and is_available is not None and not is_available():
        raise ValueError(f"{key}: {str(dev)!r} is not available on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{key}: {str(dev)!r} does not exist; this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def _saved_config(path_str: str) -> dict[str, Any] | None:
    file = Path(path_str) / POLICY_FILE
    if not file.is_file():
        return None
    saved = json.loads(file.read_text())
    version = saved.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{file} has format_version {version!r}; expected {FORMAT_VERSION}")
    return saved


def _load_config(path_str: str):
    from transformers import AutoConfig

    local = Path(path_str)
    if local.is_dir() and not (local / "config.json").is_file():
        raise ValueError(f"{path_str} has no config.json: it is not a Hugging Face model folder")
    try:
        return AutoConfig.from_pretrained(path_str)
    except OSError as e:
        raise FileNotFoundError(f"cannot load the model config from {path_str!r}: {e}") from e


def _check_causal_lm(path_str: str) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    config = _load_config(path_str)
    archs = list(getattr(config, "architectures", None) or [])
    causal_arch = not archs or any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or not causal_arch:
        raise ValueError(
            f"{path_str} holds a {config.model_type!r} model ({', '.join(archs) or 'no architecture'}"
            "), not a causal language model; load_policy needs one that "
            "AutoModelForCausalLM can load"
        )


def _load_causal_lm(path_str: str, torch_dtype: torch.dtype, device) -> nn.Module:
    from transformers import AutoModelForCausalLM

    _check_causal_lm(path_str)
    model = AutoModelForCausalLM.from_pretrained(path_str, dtype=torch_dtype)
    return model.to(device)


def _load_backbone(path_str: str, torch_dtype: torch.dtype, device) -> nn.Module:
    from transformers import AutoModel

    _load_config(path_str)
    model = AutoModel.from_pretrained(path_str, dtype=torch_dtype)
    return model.to(device)


def _check_same_tokenizer(tokenizer, critic_path: str) -> None:
    from transformers import AutoTokenizer

    try:
        other = AutoTokenizer.from_pretrained(critic_path)
    except (OSError, ValueError):
        return  # no tokenizer saved with the critic: nothing to compare
    if other.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"the critic at {critic_path} uses a different tokenizer than the policy; a separate "
            "critic must read the same token ids"
        )
