"""The Plan–Execute protocol: the one response parser and the prompt builders."""

from hiper.protocol.parser import TAGS, normalize_subgoal, parse
from hiper.protocol.prompts import PromptContext, build_prompt

__all__ = ["TAGS", "PromptContext", "build_prompt", "normalize_subgoal", "parse"]
