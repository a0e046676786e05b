"""Generation engines: token-in/token-out sampling for rollouts (``hf``: Hugging Face generate)."""

from hiper.engines.hf import Generation, HFEngine, chat_prompt_ids

__all__ = ["Generation", "HFEngine", "chat_prompt_ids"]
