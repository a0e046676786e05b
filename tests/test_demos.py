"""Expert transcripts (hiper.demos): the one generator behind the SFT examples and the tokenizer
corpus, its one noise model, and prompts identical to the ones the rollout shows the agent."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from hiper.demos import expert_transcripts, household_corpus, noise_action
from hiper.envs import ENVS, register_env
from hiper.envs.base import ExpertTurn
from hiper.envs.pool import EnvPool
from hiper.protocol import parse
from hiper.rollout import RolloutConfig, Task, rollout


def test_noise_action_repeats_or_picks_an_admissible_action():
    admissible = ["go to desk 1", "look", "inventory"]
    history = [("You arrive.", "open drawer 1")]
    rng = random.Random(0)
    draws = Counter(noise_action(rng, admissible, history) for _ in range(4000))
    # half repeats of the last executed action, the other half uniform over the admissible ones
    assert draws["open drawer 1"] / 4000 == pytest.approx(0.5, abs=0.03)
    for a in admissible:
        assert draws[a] / 4000 == pytest.approx(0.5 / 3, abs=0.03)
    assert set(draws) == {"open drawer 1", *admissible}
    # no history: always an admissible action; nothing admissible: the repeat, else empty
    assert {noise_action(rng, admissible, []) for _ in range(200)} <= set(admissible)
    assert noise_action(rng, [], history) == "open drawer 1"
    assert noise_action(rng, [], []) == ""


def test_noise_free_transcripts_win_and_execute_the_expert():
    tasks = [Task(seed=s) for s in range(12)]
    demos = list(expert_transcripts("household", tasks))
    assert [d.won for d in demos] == [True] * 12
    for d in demos:
        assert d.turns[-1].terminated and d.turns[-1].reward > 0
        assert d.turns[0].prompt.count("Current observation") == 1
        for t in d.turns:
            assert t.executed == t.action and t.action in t.admissible
            decision = parse(t.target)
            assert decision.valid and (decision.subgoal, decision.action) == (t.subgoal, t.action)


def test_noisy_transcripts_are_reproducible_and_keep_expert_targets():
    tasks = [Task(task_id=f"household/train/pick_and_place_simple/{k}") for k in range(10)]
    a = list(expert_transcripts("household", tasks, noise=0.4, rng=7))
    b = list(expert_transcripts("household", tasks, noise=0.4, rng=7))
    assert a == b
    turns = [t for d in a for t in d.turns]
    perturbed = [t for t in turns if t.executed != t.action]
    assert len(perturbed) >= 10
    for d in a:
        for prev, t in zip(d.turns, d.turns[1:], strict=False):
            # the next prompt's history shows what was executed, not what the expert wrote
            assert f"Action: {prev.executed}" in t.prompt
    with pytest.raises(ValueError, match="noise must be a probability"):
        next(expert_transcripts("household", tasks, noise=1.5))


def test_transcript_prompts_are_the_rollouts_prompts():
    """Replay a noisy transcript through the real rollout loop (a scripted generator writes the
    expert's switch and subgoal with the executed action): every prompt the rollout shows the agent
    is the transcript's prompt, character for character, in both formats."""
    task = Task(task_id="household/train/pick_heat_then_place_in_recep/3")
    for fmt in ("plan_execute", "react"):
        cfg = RolloutConfig(history_len=1, format=fmt)
        (demo,) = expert_transcripts("household", [task], noise=0.5, rng=1, cfg=cfg)
        assert any(t.executed != t.action for t in demo.turns)
        replay = _Replay(demo, fmt)
        with EnvPool("household", 1) as pool:
            (traj,) = rollout(pool, replay.generate, replay.prompt_ids, [task], "household", cfg)
        assert replay.seen[: len(demo.turns)] == [t.prompt for t in demo.turns]
        assert traj.success == demo.won and len(traj.turns) == len(demo.turns)


class _Replay:
    """A scripted policy: turn k writes the transcript's turn k with its executed action."""

    def __init__(self, demo, fmt: str):
        switches = [parse(t.target, fmt).switch or "SWITCH" for t in demo.turns]
        self.script = [
            ExpertTurn(sw, t.subgoal, t.executed).text(fmt)
            for sw, t in zip(switches, demo.turns, strict=True)
        ]
        self.seen: list[str] = []

    def prompt_ids(self, text: str) -> list[int]:
        self.seen.append(text)
        return [len(self.seen)]

    def generate(self, batch):
        text = self.script[len(self.seen) - 1]
        ids, logprobs = np.zeros(1, np.int64), np.zeros(1, np.float32)
        return [SimpleNamespace(text=text, ids=ids, logprobs=logprobs) for _ in batch]


def test_household_corpus_covers_types_chains_and_framing():
    texts = household_corpus(n_episodes=12, seed=3)
    assert texts == household_corpus(n_episodes=12, seed=3)
    assert texts != household_corpus(n_episodes=12, seed=4)
    joined = "".join(texts)
    for t in texts:
        assert t.startswith("<|im_start|>user\n")
        assert "<|im_end|>\n<|im_start|>assistant\n<switch>" in t
        assert t.endswith("</action><|im_end|>\n")
    assert "You have completed part" in joined  # chains were played
    for word in ("clean", "heat", "cool", "desklamp"):
        assert word in joined
    assert "Nothing happens." in joined  # the noise model's repeated actions are in it
    assert household_corpus(n_episodes=0) == []


@dataclass(frozen=True)
class _NoOptions:
    pass


class _NoExpertEnv:
    family = "household"

    def close(self) -> None:
        pass


if "demo-no-expert" not in ENVS:
    register_env("demo-no-expert", _NoOptions)(lambda opts: _NoExpertEnv())


def test_environment_without_expert_is_refused():
    with pytest.raises(ValueError, match="'demo-no-expert' has no expert"):
        next(expert_transcripts("demo-no-expert", [Task(seed=0)]))
