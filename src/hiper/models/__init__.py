"""Models: Hugging Face causal LMs, value heads, and locally built tiny models/tokenizers."""
