"""EnvPool: equal results on every backend, skipped slots, lost workers, env errors, timeouts.

The environments here are module-level so that subprocess workers and Ray actors can import them by
name (``tests.test_pool``): the workers get the driver's ``sys.path``.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from hiper.envs import ENVS, EnvStep, register_env
from hiper.envs.pool import BACKENDS, EnvPool, EnvPoolError

HAVE_RAY = importlib.util.find_spec("ray") is not None
requires_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed")

ADMISSIBLE = ("inc", "dec", "wait")


class CounterEnv:
    """Deterministic: reach the target count (set by task id / seed) within ``limit`` steps.

    Special actions: ``raise`` raises, ``exit`` kills the process hosting the env, ``sleep S`` sleeps.
    """

    family = "household"

    def __init__(self, limit: int = 6):
        self.limit = limit
        self.key = ""
        self.target = 0
        self.count = 0
        self.t = 0

    def _info(self, won: bool = False) -> dict:
        return {
            "won": won,
            "score": float(won),
            "task_type": "count",
            "task_id": self.key,
            "task": f"reach {self.target}",
        }

    def reset(self, task_id: str | None = None, seed: int | None = None) -> EnvStep:
        if task_id is not None and task_id.startswith("bad"):
            raise KeyError(f"unknown task {task_id!r}")
        self.key = task_id if task_id is not None else f"seed-{seed or 0}"
        self.target = 1 + (sum(map(ord, self.key)) + (seed or 0)) % 3
        self.count = self.t = 0
        return EnvStep(f"{self.key}: reach {self.target}", ADMISSIBLE, info=self._info())

    def step(self, action: str) -> EnvStep:
        if action == "raise":
            raise RuntimeError("boom")
        if action == "exit":
            os._exit(3)
        if action.startswith("sleep "):
            time.sleep(float(action.split()[1]))
        self.t += 1
        if action == "inc":
            self.count += 1
        elif action == "dec":
            self.count -= 1
        observation = f"count {self.count} at step {self.t}"
        if action not in ADMISSIBLE:
            observation = f"Nothing happens. {observation}"
        won = self.count == self.target
        return EnvStep(
            observation,
            ADMISSIBLE,
            reward=1.0 if won else 0.0,
            terminated=won,
            truncated=not won and self.t >= self.limit,
            info=self._info(won),
        )

    def close(self) -> None:
        pass


def broken_factory() -> CounterEnv:
    raise RuntimeError("no world today")


@dataclass
class CounterOptions:
    limit: int = 6


if "pool-counter" not in ENVS:

    @register_env("pool-counter", CounterOptions)
    def _make_counter(opts: CounterOptions) -> CounterEnv:
        return CounterEnv(limit=opts.limit)


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "ray":
        if not HAVE_RAY:
            pytest.skip("ray is not installed")
        request.getfixturevalue("ray_session")
    return request.param


@contextmanager
def watchdog(seconds: float):
    """Abort the test run with every thread's traceback instead of hanging forever."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def policy(slot: int, t: int, episode: int) -> str:
    plan = ["inc", "wait", "inc", "dec", "look", "inc", "inc"]
    if (slot, t, episode) == (0, 1, 2):
        return "raise"  # an env error mid-episode is part of the transcript too
    return plan[(slot + t + episode) % len(plan)]


def transcript(pool: EnvPool, episodes: int = 3) -> list:
    record = []
    for episode in range(episodes):
        task_ids = [None, f"task-{episode}", None]
        seeds = [episode, None, 10 + episode]
        steps = pool.reset(task_ids=task_ids, seeds=seeds)
        record.append(steps)
        t = 0
        while not all(s.done for s in steps):
            actions = [None if s.done else policy(i, t, episode) for i, s in enumerate(steps)]
            results = pool.step(actions)
            record.append(results)
            for i, (action, result) in enumerate(zip(actions, results, strict=True)):
                assert (result is None) == (action is None)
                if result is not None:
                    steps[i] = result
            t += 1
    return record


# ---------------------------------------------------------------------------------------------


@requires_ray
def test_backends_agree(ray_session):
    transcripts = {}
    for name in BACKENDS:
        with EnvPool(CounterEnv, 3, backend=name, options={"limit": 5}) as pool:
            assert (pool.n, pool.backend) == (3, name)
            transcripts[name] = transcript(pool)
    assert transcripts["subprocess"] == transcripts["inprocess"]
    assert transcripts["ray"] == transcripts["inprocess"]
    flat = [s for batch in transcripts["inprocess"] for s in batch if s is not None]
    assert any(s.terminated for s in flat) and any(s.truncated for s in flat)
    assert any(s.info.get("truncation") == "env_error" for s in flat)


def test_none_skips_envs(backend):
    with EnvPool(CounterEnv, 3, backend=backend) as pool:
        pool.reset(seeds=[0, 1, 2])
        first = pool.step([None, "wait", None])
        assert first[0] is None and first[2] is None
        assert first[1].observation == "count 0 at step 1"
        second = pool.step(["wait", "wait", None])
        assert second[0].observation == "count 0 at step 1"  # env 0 was not stepped before
        assert second[1].observation == "count 0 at step 2"
        assert second[2] is None
        assert pool.step([None, None, None]) == [None, None, None]


def test_env_error_truncates_and_replaces_env(backend):
    with EnvPool(CounterEnv, 2, backend=backend) as pool:
        pool.reset(task_ids=["alpha", "beta"])
        results = pool.step(["raise", "wait"])
        bad = results[0]
        assert bad.truncated and not bad.terminated and bad.observation == ""
        assert bad.info["truncation"] == "env_error"
        assert bad.info["error"] == "RuntimeError: boom"
        assert bad.info["task_id"] == "alpha" and bad.info["won"] is False
        assert results[1].observation == "count 0 at step 1"
        assert pool.active == [False, True]
        # The slot works again after a reset, with a fresh env.
        again = pool.reset(task_ids=["alpha", "beta"])
        assert again[0].observation.startswith("alpha: reach")
        assert pool.step(["wait", "wait"])[0].observation == "count 0 at step 1"


def _assert_reaped(pids: list[int]) -> None:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        raise AssertionError(f"worker {pid} still exists (state {state})")


def test_subprocess_worker_killed_mid_episode():
    with EnvPool(CounterEnv, 3, backend="subprocess") as pool:
        pool.reset(seeds=[0, 1, 2])
        pool.step(["wait"] * 3)
        pids = pool.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        results = pool.step(["wait"] * 3)
        lost = results[1]
        assert lost.truncated and not lost.terminated and lost.observation == ""
        assert lost.info["truncation"] == "worker_lost"
        assert "SIGKILL" in lost.info["error"], lost.info["error"]
        assert [r.observation for r in (results[0], results[2])] == ["count 0 at step 2"] * 2
        new_pids = pool.worker_pids()
        assert new_pids[1] != pids[1] and new_pids[0] == pids[0] and new_pids[2] == pids[2]
        _assert_reaped([pids[1]])
        # Usable afterwards on every slot; the replacement starts a new episode.
        steps = pool.reset(seeds=[0, 1, 2])
        assert [s.info["task_id"] for s in steps] == ["seed-0", "seed-1", "seed-2"]
        assert [r.observation for r in pool.step(["wait"] * 3)] == ["count 0 at step 1"] * 3
    _assert_reaped(new_pids)


def test_subprocess_worker_exiting_is_lost_and_replaced():
    with EnvPool(CounterEnv, 2, backend="subprocess") as pool:
        pool.reset(seeds=[0, 1])
        results = pool.step(["exit", "wait"])
        assert results[0].info["truncation"] == "worker_lost"
        assert "exited with code 3" in results[0].info["error"]
        assert results[1].observation == "count 0 at step 1"
        pool.reset(seeds=[0, 1])
        assert [r.observation for r in pool.step(["wait", "wait"])] == ["count 0 at step 1"] * 2


@requires_ray
def test_ray_actor_killed_mid_episode(ray_session):
    with EnvPool(CounterEnv, 3, backend="ray") as pool:
        pool.reset(seeds=[0, 1, 2])
        pool.step(["wait"] * 3)
        old = pool.actors()
        ray_session.kill(old[1])
        results = pool.step(["wait"] * 3)
        lost = results[1]
        assert lost.truncated and lost.observation == ""
        assert lost.info["truncation"] == "worker_lost"
        assert "ray actor died" in lost.info["error"], lost.info["error"]
        assert [r.observation for r in (results[0], results[2])] == ["count 0 at step 2"] * 2
        assert pool.actors()[1] != old[1]
        pool.reset(seeds=[0, 1, 2])
        assert [r.observation for r in pool.step(["wait"] * 3)] == ["count 0 at step 1"] * 3


@pytest.mark.parametrize("name", ["subprocess", pytest.param("ray", marks=requires_ray)])
def test_step_timeout_counts_as_lost(name, request):
    if name == "ray":
        request.getfixturevalue("ray_session")
    with EnvPool(CounterEnv, 2, backend=name, step_timeout=1.0) as pool:
        pool.reset(seeds=[0, 1])
        start = time.monotonic()
        results = pool.step(["sleep 60", "wait"])
        assert time.monotonic() - start < 10
        assert results[0].info["truncation"] == "worker_lost"
        assert "no reply within 1 s" in results[0].info["error"]
        assert results[1].observation == "count 0 at step 1"
        pool.reset(seeds=[0, 1])
        assert [r.observation for r in pool.step(["wait", "wait"])] == ["count 0 at step 1"] * 2


@pytest.mark.parametrize("name", ["subprocess", pytest.param("ray", marks=requires_ray)])
def test_more_workers_than_cores_do_not_hang(name, request):
    if name == "ray":
        request.getfixturevalue("ray_session")
    n = 8
    with watchdog(90), EnvPool(CounterEnv, n, backend=name, step_timeout=30) as pool:
        assert n > (os.cpu_count() or 1) or n == 8
        for episode in range(2):
            steps = pool.reset(seeds=[episode * n + i for i in range(n)])
            assert len(steps) == n
            # Everyone sleeps 0.3 s at once: parallel workers finish in well under n * 0.3 s.
            start = time.monotonic()
            results = pool.step(["sleep 0.3"] * n)
            assert all(
                r is not None and r.observation.startswith("Nothing happens") for r in results
            )
            assert time.monotonic() - start < n * 0.3
        assert len(set(pool.worker_pids())) == n


@pytest.mark.parametrize("name", ["inprocess", "subprocess"])
def test_named_factory_with_options(name):
    with EnvPool("pool-counter", 2, backend=name, options={"limit": 1}) as pool:
        pool.reset(seeds=[0, 1])
        results = pool.step(["wait", "wait"])
        assert all(r.truncated and "truncation" not in r.info for r in results)


def test_reset_failure_raises_and_pool_stays_usable(backend):
    with EnvPool(CounterEnv, 2, backend=backend) as pool:
        with pytest.raises(EnvPoolError, match=r"env 1 \(task_id='bad-7'.*KeyError"):
            pool.reset(task_ids=["ok", "bad-7"])
        assert pool.active == [True, False]
        with pytest.raises(ValueError, match=r"env 1 has no episode in progress"):
            pool.step(["wait", "wait"])
        pool.reset(task_ids=["ok", "fine"])
        assert [r.observation for r in pool.step(["wait", "wait"])] == ["count 0 at step 1"] * 2


@pytest.mark.parametrize("name", ["inprocess", "subprocess"])
def test_factory_failure_raises(name):
    with pytest.raises(
        EnvPoolError, match=r"2 of 2 environments could not be created.*no world today"
    ):
        EnvPool(broken_factory, 2, backend=name)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown backend 'threads'"):
        EnvPool(CounterEnv, 2, backend="threads")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"n \(the number of environments\) must be a positive int"
    ):
        EnvPool(CounterEnv, 0)
    with pytest.raises(ValueError, match=r"step_timeout must be a positive number"):
        EnvPool(CounterEnv, 1, step_timeout=0)
    with pytest.raises(ValueError, match=r"unknown environment 'no-such-env'"):
        EnvPool("no-such-env", 1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['limt'\]"):
        EnvPool("pool-counter", 1, options={"limt": 3})
    with pytest.raises(ValueError, match=r"must be picklable"):
        EnvPool(lambda: CounterEnv(), 1, backend="subprocess")
    with pytest.raises(ValueError, match=r"factory must be an environment name or a callable"):
        EnvPool(42, 1)  # type: ignore[arg-type]

    pool = EnvPool(CounterEnv, 2)
    with pytest.raises(ValueError, match=r"expected 2 seeds \(one per environment\), got 3"):
        pool.reset(seeds=[1, 2, 3])
    with pytest.raises(ValueError, match=r"expected 2 task_ids \(one per environment\), got 1"):
        pool.reset(task_ids=["a"])
    with pytest.raises(ValueError, match=r"seeds\[1\] must be int or None"):
        pool.reset(seeds=[1, "2"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"has no episode in progress"):
        pool.step(["wait", None])
    pool.reset()
    with pytest.raises(
        ValueError, match=r"expected 2 actions \(one per environment, None to skip one\), got 1"
    ):
        pool.step(["wait"])
    with pytest.raises(ValueError, match=r"actions\[1\] must be a str or None"):
        pool.step(["wait", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"actions must be a list"):
        pool.step("wait")  # type: ignore[arg-type]
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match=r"closed"):
        pool.reset()


def test_close_stops_and_reaps_workers():
    pool = EnvPool(CounterEnv, 3, backend="subprocess")
    pids = pool.worker_pids()
    pool.reset()
    pool.close()
    _assert_reaped(pids)
    # Dropping an open pool closes it too (best effort).
    pool = EnvPool(CounterEnv, 2, backend="subprocess")
    pids = pool.worker_pids()
    del pool
    _assert_reaped(pids)
