"""``evaluate_policy``: every (seed, task) episode in one rollout, reported seed by seed."""

from __future__ import annotations

import pytest

from hiper.engines.hf import HFEngine
from hiper.envs import make_env
from hiper.eval import evaluate_policy
from hiper.models.policy import load_policy

OPTIONS = {"max_steps": 3, "task_types": ["pick_and_place_simple"]}


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(tiny_model_dir, reference=False)


@pytest.fixture(scope="module")
def task_ids() -> list[str]:
    env = make_env("household", **OPTIONS)
    try:
        return [env.task_id_for_seed(s) for s in (0, 1)]
    finally:
        env.close()


def _evaluate(policy, task_ids, **kw):
    return evaluate_policy(
        policy,
        "household",
        task_ids,
        options=OPTIONS,
        max_turns=3,
        max_new_tokens=12,
        history_len=1,
        instructions=False,
        **kw,
    )


def _texts(trajs) -> list[list[str]]:
    return [[t.response_text for t in tr.turns] for tr in trajs]


def test_seeds_share_generate_calls_and_come_back_per_seed(policy, task_ids, monkeypatch):
    sizes: list[int] = []
    real = HFEngine.generate

    def spy(self, prompts, **kw):  # the real engine, its batch sizes recorded
        sizes.append(len(prompts))
        return real(self, prompts, **kw)

    monkeypatch.setattr(HFEngine, "generate", spy)
    report = _evaluate(policy, task_ids, seeds=3, greedy=False, temperature=1.0)
    # 2 tasks x 3 seeds = 6 episodes, all in the first turn's call (was 3 calls of 2)
    assert sizes[0] == 6 and max(sizes) == 6
    assert len(report.runs) == 3 and report.seeds == [0, 1, 2]
    for run in report.runs:  # each seed's run: the tasks in order, one episode each
        assert [tr.task_id for tr in run] == task_ids
    # sampling: the seeds' episodes are not copies of one another
    runs = [_texts(run) for run in report.runs]
    assert runs[0] != runs[1] or runs[1] != runs[2]
    table = report.table()["all"]
    assert table["episodes"] == 2
    per_seed = [sum(tr.success for tr in run) / 2 for run in report.runs]
    assert table["success_mean"] == pytest.approx(sum(per_seed) / 3)


def test_greedy_seeds_repeat_the_same_episodes(policy, task_ids):
    report = _evaluate(policy, task_ids, seeds=2, greedy=True)
    assert _texts(report.runs[0]) == _texts(report.runs[1])
    assert report.table()["all"]["success_std"] == 0.0


def test_seeds_must_be_positive(policy, task_ids):
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        _evaluate(policy, task_ids, seeds=0)


def test_progress_counts_every_episode(policy, task_ids):
    calls: list[tuple[int, int]] = []
    _evaluate(policy, task_ids, seeds=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 4) for i in range(5)]  # (0, 4) first, then one call per episode
