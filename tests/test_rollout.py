"""The multi-turn rollout loop on the real household world: bookkeeping with a scripted policy,
and end to end with the real tiny model through the HF engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hiper.envs import make_env
from hiper.envs.pool import EnvPool
from hiper.rollout import RolloutConfig, Task, rollout


@dataclass
class Gen:
    ids: np.ndarray
    logprobs: np.ndarray
    text: str
    finish: str = "stop"


class ExpertScript:
    """A policy that answers every prompt with the household expert's turn for that episode.

    It keeps its own copy of each environment (same task ids), stepped in lockstep with the pool.
    Every ``bad_every``-th response is garbage, to exercise invalid turns."""

    def __init__(self, task_ids, bad_every=0, wave=None):
        self.envs = []
        for tid in task_ids:
            env = make_env("household")
            env.reset(task_id=tid)
            self.envs.append(env)
        self.subgoals = [None] * len(task_ids)
        self.wave = wave or len(task_ids)
        self.pending = list(range(len(task_ids)))
        self.live = []
        self.calls = 0
        self.bad_every = bad_every

    def __call__(self, prompt_ids):
        if not self.live:  # the rollout starts its next wave of pool-size episodes
            self.live, self.pending = self.pending[: self.wave], self.pending[self.wave :]
        assert len(prompt_ids) == len(self.live)
        out = []
        still = []
        for i in self.live:
            self.calls += 1
            if self.bad_every and self.calls % self.bad_every == 0:
                text, action = "I will just wander around.", ""
            else:
                turn = self.envs[i].expert_turn(subgoal=self.subgoals[i])
                self.subgoals[i] = turn.subgoal
                text, action = turn.text(), turn.action
            res = self.envs[i].step(action)
            if not res.done:
                still.append(i)
            out.append(Gen(np.arange(3), np.zeros(3, np.float32), text))
        self.live = still
        return out


def prompt_ids(text):
    return [len(text) % 97, 1, 2]


def tasks_for(split="train", n=4):
    env = make_env("household", split=split)
    return [env.reset(seed=s).info["task_id"] for s in range(n)]


def test_expert_script_wins_and_records_everything():
    ids = tasks_for()
    with EnvPool("household", 3) as pool:
        trajs = rollout(
            pool, ExpertScript(ids, wave=3), prompt_ids, [Task(task_id=t) for t in ids], "household"
        )
    assert [tr.task_id for tr in trajs] == ids  # order kept across waves of 3
    for tr in trajs:
        assert tr.success and tr.score == 1.0 and tr.terminated
        assert tr.turns[0].decision.switch == "SWITCH" and all(t.decision.valid for t in tr.turns)
        # the subgoal the next prompt shows follows the segment rule
        for a, b in zip(tr.turns, tr.turns[1:], strict=False):
            if b.decision.switch == "KEEP":
                assert b.subgoal == a.subgoal
        assert tr.turns[-1].terminated and not any(t.terminated for t in tr.turns[:-1])
        assert tr.task_type and tr.info["task"]


def test_invalid_turns_still_step_and_history_is_bounded():
    ids = tasks_for(n=2)
    seen_prompts = []

    def recording_prompt_ids(text):
        seen_prompts.append(text)
        return prompt_ids(text)

    script = ExpertScript(ids, bad_every=3)
    with EnvPool("household", 2) as pool:
        trajs = rollout(
            pool,
            script,
            recording_prompt_ids,
            [Task(task_id=t) for t in ids],
            "household",
            RolloutConfig(history_len=1),
        )
    bad = [t for tr in trajs for t in tr.turns if not t.decision.valid]
    assert bad and all(t.response_text == "I will just wander around." for t in bad)
    assert all(t.reward == 0.0 for t in bad)
    # history_len=1: a prompt never shows the observation from two steps back
    tr = trajs[0]
    if len(tr.turns) > 3:
        later = [p for p in seen_prompts if tr.turns[0].observation in p]
        assert (
            len(later) <= 2
        )  # the first observation shows at step 0 and as history at step 1 only


def test_max_turns_truncates():
    ids = tasks_for(n=2)
    with EnvPool("household", 2) as pool:
        trajs = rollout(
            pool,
            ExpertScript(ids),
            prompt_ids,
            [Task(task_id=t) for t in ids],
            "household",
            RolloutConfig(max_turns=2),
        )
    for tr in trajs:
        assert len(tr.turns) == 2 and tr.truncated and not tr.terminated
        assert tr.turns[-1].info["truncation"] == "max_turns"


def test_real_tiny_model_end_to_end(tiny_model_dir):
    from hiper.engines.hf import HFEngine, chat_prompt_ids
    from hiper.models.policy import load_policy

    policy = load_policy(tiny_model_dir)
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=24, temperature=1.0)
    ids = tasks_for(n=2)
    tasks = [Task(task_id=t, group_id="g") for t in ids for _ in range(2)]
    with EnvPool("household", 4) as pool:
        trajs = rollout(
            pool,
            lambda p: engine.generate(p, seed=0),
            lambda text: chat_prompt_ids(policy.tokenizer, text),
            tasks,
            "household",
            RolloutConfig(max_turns=3),
        )
    assert len(trajs) == 4 and all(tr.group_id == "g" for tr in trajs)
    for tr in trajs:
        assert 1 <= len(tr.turns) <= 3
        for t in tr.turns:
            assert t.response_ids.size == t.logprobs.size >= 1
            assert t.response_text == policy.tokenizer.decode(
                t.response_ids, skip_special_tokens=True
            )
            assert policy.tokenizer.decode(t.prompt_ids).count("<|im_start|>") >= 2  # chat template


@pytest.mark.parametrize("bad", [{"max_turns": 0}, {"history_len": -1}, {"format": "yaml"}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        RolloutConfig(**bad)
