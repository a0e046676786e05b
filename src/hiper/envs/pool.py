"""A pool of text environments stepped as one batch, in-process, in subprocesses or in Ray actors.

:class:`EnvPool` owns ``n`` environments built from one factory and steps them together::

    with EnvPool("household", n=16, backend="subprocess", options={"split": "train"}) as pool:
        steps = pool.reset(seeds=list(range(16)))
        while not all(s.done for s in steps):
            actions = [None if s.done else policy(s) for s in steps]
            steps = [old if new is None else new for old, new in zip(steps, pool.step(actions))]

The factory is an environment name (created with :func:`hiper.envs.make_env` and ``options`` inside
the worker) or a callable returning a :class:`~hiper.envs.TextEnv` (called with ``options`` as keyword
arguments). For the ``subprocess`` and ``ray`` backends the callable must be picklable by reference:
a module-level function or class, not a lambda or a local. Subprocess workers are started with
``spawn`` (or ``forkserver``), which re-imports the main module: a script that builds a subprocess
pool needs the usual ``if __name__ == "__main__":`` guard. Workers inherit the driver's ``sys.path``
(Ray actors too), so a factory importable in the driver is importable in the workers.

Every backend returns the same results for the same seeds, task ids and actions. Failures never
break the batch: when an environment raises, or its worker process/actor dies or does not answer
within ``step_timeout`` seconds, that slot's episode is reported as truncated (``observation=""``,
``truncated=True``, ``info["truncation"]`` ``"env_error"`` or ``"worker_lost"`` and ``info["error"]``
the reason), the environment (and, if lost, its worker) is replaced by a fresh one, and the slot
takes part again from the next :meth:`EnvPool.reset`. The replacement environment is not put back
into the interrupted episode.

``reset`` is different: a worker lost during reset is replaced and the reset retried once; if a slot
still cannot be reset (the environment raised, e.g. on an unknown task id) :class:`EnvPoolError` is
raised after every other slot has been reset.

The pool is not thread-safe: call it from one thread.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hiper.envs.base import EnvStep, TextEnv, get_env_spec, make_env, make_options

__all__ = ["BACKENDS", "Backend", "EnvPool", "EnvPoolError", "NamedEnvFactory"]

logger = logging.getLogger(__name__)

Backend = Literal["inprocess", "subprocess", "ray"]
BACKENDS: tuple[str, ...] = ("inprocess", "subprocess", "ray")
START_METHODS: tuple[str, ...] = ("spawn", "forkserver")

# The info keys of the last reset that a truncated result carries over, so that consumers can still
# tell which task the cut episode belonged to.
_CARRIED_INFO_KEYS = ("task_id", "task_type", "task")


class EnvPoolError(RuntimeError):
    """An environment could not be created or reset."""


# ---------------------------------------------------------------------------------------------
# Factories


@dataclass(frozen=True)
class NamedEnvFactory:
    """``make_env(name, **options)``, picklable; used for a factory given as an environment name.

    ``module`` is the module that registered the environment: a worker process imports it first, so
    environments registered outside :mod:`hiper.envs` (e.g. by a test module) exist there too.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    module: str | None = None

    def __call__(self) -> TextEnv:
        if self.module and self.module not in ("__main__", "__mp_main__"):
            __import__(self.module)
        return make_env(self.name, **self.options)


@dataclass(frozen=True)
class _BoundFactory:
    """``factory(**options)``, picklable when ``factory`` is."""

    factory: Callable[..., TextEnv]
    options: dict[str, Any]

    def __call__(self) -> TextEnv:
        return self.factory(**self.options)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# The environment host: owns one environment and answers requests. The same code runs in-process,
# in a subprocess worker and in a Ray actor, which is what keeps the backends' results identical.
#
# Requests are (op, payload) with op "ping" | "reset" | "step" | "close". Replies are
# (kind, value, traceback_text):
#   ("ok", value, "")            value: EnvStep for reset/step, the host's pid for ping
#   ("error", text, tb)          the environment raised; the host has already replaced it
#   ("init_error", text, tb)     the host has no environment (the factory failed)
# The parent adds ("lost", reason, "") when a worker died, hung or answered garbage.

Reply = tuple[str, Any, str]


class _EnvHost:
    def __init__(self, factory: Callable[[], TextEnv] | None = None, blob: bytes | None = None):
        self.env: TextEnv | None = None
        self.init_error: tuple[str, str] | None = None
        self.factory: Callable[[], TextEnv] | None = factory
        if blob is not None:
            try:
                self.factory = pickle.loads(blob)
            except Exception as exc:
                self.init_error = (
                    f"cannot load the env factory: {_describe(exc)}",
                    traceback.format_exc(),
                )
                return
        self._create()

    def _create(self) -> None:
        assert self.factory is not None
        try:
            self.env = self.factory()
            self.init_error = None
        except Exception as exc:
            self.env = None
            self.init_error = (f"env factory failed: {_describe(exc)}", traceback.format_exc())

    def _recreate(self) -> None:
        self.close()
        if self.factory is not None:
            self._create()

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()

    def handle(self, op: str, payload: Any) -> Reply:
        if op == "close":
            self.close()
            return ("ok", None, "")
        if self.env is None:
            text, tb = self.init_error or ("no environment", "")
            return ("init_error", text, tb)
        if op == "ping":
            return ("ok", os.getpid(), "")
        try:
            if op == "reset":
                task_id, seed = payload
                result = self.env.reset(task_id=task_id, seed=seed)
            elif op == "step":
                result = self.env.step(payload)
            else:
                raise ValueError(f"unknown request {op!r}")
            if not isinstance(result, EnvStep):
                raise TypeError(f"env.{op} returned {type(result).__name__}, not EnvStep")
        except Exception as exc:
            tb = traceback.format_exc()
            self._recreate()  # its state may be inconsistent now
            return ("error", _describe(exc), tb)
        return ("ok", result, "")


# ---------------------------------------------------------------------------------------------
# Backends. Each runs a batch of requests {slot: (op, payload)} and returns {slot: Reply}; a lost
# worker is replaced by the backend before it returns.


class _InProcess:
    def __init__(self, factory: Callable[[], TextEnv], n: int):
        self.factory = factory
        self.hosts = [_EnvHost(factory) for _ in range(n)]

    def run(self, requests: dict[int, tuple[str, Any]], timeout: float) -> dict[int, Reply]:
        return {i: self.hosts[i].handle(op, payload) for i, (op, payload) in requests.items()}

    def pids(self) -> list[int]:
        return [os.getpid()] * len(self.hosts)

    def close(self) -> None:
        for host in self.hosts:
            host.close()


def _worker_main(conn: mp_connection.Connection, blob: bytes) -> None:
    """A subprocess worker: one environment, requests answered in order until "close" or EOF."""
    # Ctrl-C reaches the whole process group; the parent decides what to do, not the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    host = _EnvHost(blob=blob)
    while True:
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):  # the parent went away
            break
        reply = host.handle(op, payload)
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            break
        except Exception as exc:  # the reply did not pickle (e.g. an odd object in info)
            tb = traceback.format_exc()
            host._recreate()
            try:
                conn.send(("error", f"cannot send the result back: {_describe(exc)}", tb))
            except Exception:
                break
        if op == "close":
            break
    host.close()
    conn.close()


@dataclass
class _Proc:
    process: Any  # multiprocessing process of the chosen context
    conn: mp_connection.Connection
    confirmed: bool = False  # has answered at least once (so its start-up time is over)


class _Subprocess:
    def __init__(self, blob: bytes, n: int, start_method: str, start_timeout: float):
        self.blob = blob
        self.ctx = mp.get_context(start_method)
        self.start_timeout = start_timeout
        self.workers: list[_Proc | None] = [None] * n
        try:
            for i in range(n):
                self.workers[i] = self._start(i)
        except BaseException:
            self.close()
            raise

    def _start(self, i: int) -> _Proc:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(
            target=_worker_main, args=(child_conn, self.blob), name=f"hiper-env-{i}", daemon=True
        )
        process.start()
        child_conn.close()  # so that the worker's death shows up as EOF on parent_conn
        return _Proc(process, parent_conn)

    def _ensure(self, i: int) -> _Proc:
        worker = self.workers[i]
        if worker is None:
            worker = self.workers[i] = self._start(i)
        return worker

    @staticmethod
    def _stop(worker: _Proc, grace: float = 0.0) -> None:
        process = worker.process
        with contextlib.suppress(Exception):
            if grace > 0:
                process.join(grace)
            if process.is_alive():
                process.kill()
            process.join(5.0)
        with contextlib.suppress(Exception):
            worker.conn.close()
        with contextlib.suppress(Exception):
            process.close()

    def _discard(self, i: int) -> None:
        worker, self.workers[i] = self.workers[i], None
        if worker is not None:
            self._stop(worker)

    def _replace(self, i: int) -> None:
        self._discard(i)
        self.workers[i] = self._start(i)

    def _death(self, worker: _Proc) -> str:
        process = worker.process
        with contextlib.suppress(Exception):
            process.join(1.0)
        code = process.exitcode
        if code is None:
            return f"worker process {process.pid} closed its pipe"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker process {process.pid} was killed by {name}"
        return f"worker process {process.pid} exited with code {code}"

    def run(self, requests: dict[int, tuple[str, Any]], timeout: float) -> dict[int, Reply]:
        out: dict[int, Reply] = {}
        pending: dict[mp_connection.Connection, int] = {}
        deadline: dict[int, float] = {}
        start = time.monotonic()
        # Send every request first, so that the environments work in parallel.
        for i, (op, payload) in requests.items():
            worker = self._ensure(i)
            try:
                worker.conn.send((op, payload))
            except (BrokenPipeError, EOFError, OSError):
                out[i] = ("lost", self._death(worker), "")
                self._replace(i)
                continue
            pending[worker.conn] = i
            deadline[i] = start + timeout + (0.0 if worker.confirmed else self.start_timeout)
        try:
            while pending:
                now = time.monotonic()
                for conn, i in list(pending.items()):
                    if now >= deadline[i]:
                        del pending[conn]
                        pid = self.workers[i].process.pid  # type: ignore[union-attr]
                        out[i] = (
                            "lost",
                            f"worker process {pid} gave no reply within {timeout:g} s; killed",
                            "",
                        )
                        self._replace(i)
                if not pending:
                    break
                wait = max(0.0, min(deadline[i] for i in pending.values()) - now)
                for conn in mp_connection.wait(list(pending), timeout=wait):
                    i = pending.pop(conn)  # type: ignore[arg-type]
                    worker = self.workers[i]
                    assert worker is not None
                    try:
                        reply = conn.recv()  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        out[i] = ("lost", self._death(worker), "")
                        self._replace(i)
                        continue
                    except Exception as exc:  # a reply that does not unpickle here
                        out[i] = ("lost", f"unreadable reply from the worker: {_describe(exc)}", "")
                        self._replace(i)
                        continue
                    worker.confirmed = True
                    out[i] = reply
        except BaseException:
            # Interrupted (e.g. KeyboardInterrupt): replies still owed would desynchronise the pipes.
            for i in pending.values():
                self._discard(i)
            raise
        return out

    def pids(self) -> list[int]:
        return [self._ensure(i).process.pid for i in range(len(self.workers))]

    def close(self) -> None:
        live = [w for w in self.workers if w is not None]
        self.workers = [None] * len(self.workers)
        for worker in live:
            with contextlib.suppress(Exception):
                worker.conn.send(("close", None))
        end = time.monotonic() + 5.0
        for worker in live:
            self._stop(worker, grace=max(0.0, end - time.monotonic()))


class _RayEnvActor:
    """The body of a Ray actor; wrapped with ``ray.remote`` on first use."""

    def __init__(self, sys_path: list[str], blob: bytes):
        # Make the driver's import path visible, so that the factory unpickles as it would there.
        sys.path.extend(p for p in sys_path if p not in sys.path)
        self.host = _EnvHost(blob=blob)

    def call(self, op: str, payload: Any) -> Reply:
        return self.host.handle(op, payload)


_ray_actor_class: Any = None


def _ray() -> Any:
    """The ``ray`` module, initialised if it is not yet: connected to the cluster that
    ``RAY_ADDRESS`` names (``ray start --head`` on one node, ``ray start --address`` on the
    others), else a local instance of its own. Under torchrun each rank starts its own local
    instance with its share of the machine's cores (``LOCAL_WORLD_SIZE`` ranks per machine);
    the environment actors reserve no core (``num_cpus=0``), so more workers than cores start
    at once instead of waiting for a core."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("backend 'ray' needs the 'ray' package (pip install ray)") from exc
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "ignore_reinit_error": True}
        if not os.environ.get("RAY_ADDRESS"):
            ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            kwargs["num_cpus"] = max((os.cpu_count() or 1) // ranks_here, 1)
            kwargs["include_dashboard"] = False
        ray.init(**kwargs)
    return ray


class _Ray:
    def __init__(self, blob: bytes, n: int, start_timeout: float):
        global _ray_actor_class
        self.ray = _ray()
        if _ray_actor_class is None:
            # num_cpus=0: actors do not reserve cores, so more actors than cores never wait.
            _ray_actor_class = self.ray.remote(num_cpus=0, max_restarts=0)(_RayEnvActor)
        self.actor_class = _ray_actor_class
        self.blob = blob
        self.start_timeout = start_timeout
        self.actors: list[Any] = [None] * n
        self.confirmed = [False] * n
        try:
            for i in range(n):
                self._start(i)
        except BaseException:
            self.close()
            raise

    def _start(self, i: int) -> Any:
        self.actors[i] = self.actor_class.remote(list(sys.path), self.blob)
        self.confirmed[i] = False
        return self.actors[i]

    def _ensure(self, i: int) -> Any:
        return self.actors[i] if self.actors[i] is not None else self._start(i)

    def _discard(self, i: int) -> None:
        actor, self.actors[i] = self.actors[i], None
        if actor is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)

    def _replace(self, i: int) -> None:
        self._discard(i)
        self._start(i)

    def run(self, requests: dict[int, tuple[str, Any]], timeout: float) -> dict[int, Reply]:
        from ray.exceptions import RayActorError

        ray = self.ray
        out: dict[int, Reply] = {}
        pending: dict[Any, int] = {}
        deadline: dict[int, float] = {}
        start = time.monotonic()
        for i, (op, payload) in requests.items():
            pending[self._ensure(i).call.remote(op, payload)] = i
            deadline[i] = start + timeout + (0.0 if self.confirmed[i] else self.start_timeout)
        try:
            while pending:
                now = time.monotonic()
                for ref, i in list(pending.items()):
                    if now >= deadline[i]:
                        del pending[ref]
                        out[i] = (
                            "lost",
                            f"ray actor gave no reply within {timeout:g} s; killed",
                            "",
                        )
                        self._replace(i)
                if not pending:
                    break
                wait = max(0.0, min(deadline[i] for i in pending.values()) - now)
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=wait)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        out[i] = ray.get(ref)
                        self.confirmed[i] = True
                    except RayActorError as exc:
                        out[i] = (
                            "lost",
                            "ray actor died: " + str(exc).strip().splitlines()[-1],
                            "",
                        )
                        self._replace(i)
                    except Exception as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        out[i] = ("lost", f"ray call failed: {type(exc).__name__}: {first}", "")
                        self._replace(i)
        except BaseException:
            for i in pending.values():
                self._discard(i)
            raise
        return out

    def pids(self) -> list[int]:
        replies = self.run({i: ("ping", None) for i in range(len(self.actors))}, self.start_timeout)
        return [r[1] if r[0] == "ok" else -1 for _, r in sorted(replies.items())]

    def close(self) -> None:
        live = [a for a in self.actors if a is not None]
        self.actors = [None] * len(self.actors)
        with contextlib.suppress(Exception):
            refs = [a.call.remote("close", None) for a in live]
            self.ray.wait(refs, num_returns=len(refs), timeout=5.0)
        for actor in live:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)


# ---------------------------------------------------------------------------------------------
# The pool


class EnvPool:
    """``n`` environments from one factory, reset and stepped as a batch.

    Args:
        factory: an environment name for :func:`~hiper.envs.make_env`, or a callable returning a
            ``TextEnv`` (picklable by reference for the ``subprocess`` and ``ray`` backends).
        n: number of environments.
        backend: ``"inprocess"`` (a list of environments), ``"subprocess"`` (one worker process per
            environment, stepped in parallel) or ``"ray"`` (one Ray actor per environment; Ray is
            started locally if it is not initialised).
        options: keyword arguments for ``make_env`` (named factory) or for the callable.
        step_timeout: seconds a worker may take over one request before it counts as lost (killed
            and replaced). Not enforced by the ``inprocess`` backend.
        start_timeout: extra seconds a freshly started worker gets for its first answer.
        start_method: multiprocessing start method of the ``subprocess`` backend.
    """

    def __init__(
        self,
        factory: str | Callable[..., TextEnv],
        n: int,
        backend: Backend = "inprocess",
        options: dict[str, Any] | None = None,
        step_timeout: float = 60.0,
        *,
        start_timeout: float = 120.0,
        start_method: str = "spawn",
    ):
        self._closed = True  # until fully constructed, so that __del__ has nothing to do
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (the number of environments) must be a positive int, got {n!r}")
        for name, value in (("step_timeout", step_timeout), ("start_timeout", start_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if start_method not in START_METHODS:
            raise ValueError(
                f"unknown start_method {start_method!r}; expected one of {list(START_METHODS)}"
            )
        if options is not None and not isinstance(options, dict):
            raise ValueError(
                f"options must be a dict of keyword arguments, got {type(options).__name__}"
            )
        options = dict(options or {})

        resolved: Callable[[], TextEnv]
        if isinstance(factory, str):
            spec = get_env_spec(factory)  # ValueError for an unknown environment
            make_options(factory, **options)  # ValueError for unknown or bad options, here and now
            resolved = NamedEnvFactory(factory, options, getattr(spec.factory, "__module__", None))
        elif callable(factory):
            resolved = _BoundFactory(factory, options) if options else factory
        else:
            raise ValueError(
                f"factory must be an environment name or a callable returning a TextEnv, got {factory!r}"
            )

        self.n = n
        self.backend: Backend = backend
        self.step_timeout = float(step_timeout)
        self.start_timeout = float(start_timeout)
        self._active = [False] * n  # slot has an episode in progress
        self._last_info: list[dict[str, Any]] = [{} for _ in range(n)]

        if backend == "inprocess":
            self._impl: _InProcess | _Subprocess | _Ray = _InProcess(resolved, n)
        else:
            try:
                blob = pickle.dumps(resolved)
            except Exception as exc:
                raise ValueError(
                    f"factory {factory!r} cannot be sent to {backend} workers: it must be picklable "
                    f"(a module-level function or class, not a lambda or a local): {_describe(exc)}"
                ) from exc
            if backend == "subprocess":
                self._impl = _Subprocess(blob, n, start_method, self.start_timeout)
            else:
                self._impl = _Ray(blob, n, self.start_timeout)
        self._closed = False

        # Fail fast when the environments cannot be built.
        try:
            replies = self._impl.run({i: ("ping", None) for i in range(n)}, self.step_timeout)
        except BaseException:
            self.close()
            raise
        failures = [(i, r) for i, r in sorted(replies.items()) if r[0] != "ok"]
        if failures:
            self.close()
            i, (_, text, tb) = failures[0]
            if tb:
                logger.error("env %d of the pool could not be created:\n%s", i, tb)
            raise EnvPoolError(
                f"{len(failures)} of {n} environments could not be created; env {i}: {text}"
            )

    # -- helpers --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EnvPool is closed")

    def _per_env(self, name: str, values: list[Any] | None, types: tuple[type, ...]) -> list[Any]:
        if values is None:
            return [None] * self.n
        if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
            raise ValueError(
                f"{name} must be a list with one entry per environment, got {values!r}"
            )
        if len(values) != self.n:
            raise ValueError(f"expected {self.n} {name} (one per environment), got {len(values)}")
        values = list(values)
        for i, v in enumerate(values):
            if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
                expected = " or ".join(t.__name__ for t in types)
                raise ValueError(f"{name}[{i}] must be {expected} or None, got {v!r}")
        return values

    def _truncated(self, i: int, reason: str, error: str) -> EnvStep:
        last = self._last_info[i]
        info: dict[str, Any] = {k: last[k] for k in _CARRIED_INFO_KEYS if k in last}
        info.update(won=False, score=0.0, truncation=reason, error=error)
        return EnvStep(observation="", truncated=True, terminated=False, info=info)

    def _log_failure(self, i: int, what: str, reply: Reply) -> None:
        kind, text, tb = reply
        if kind == "lost":
            logger.warning("env %d: worker lost during %s (%s); replaced", i, what, text)
        else:
            logger.warning("env %d: %s failed: %s\n%s", i, what, text, tb)

    # -- API ------------------------------------------------------------------------------

    def reset(
        self, task_ids: list[str | None] | None = None, seeds: list[int | None] | None = None
    ) -> list[EnvStep]:
        """Reset every environment, env ``i`` to ``task_ids[i]`` / ``seeds[i]`` (None: its default)."""
        self._check_open()
        task_ids = self._per_env("task_ids", task_ids, (str,))
        seeds = self._per_env("seeds", seeds, (int,))
        requests = {i: ("reset", (task_ids[i], seeds[i])) for i in range(self.n)}
        self._active = [False] * self.n
        replies = self._impl.run(requests, self.step_timeout)
        lost = [i for i, r in replies.items() if r[0] == "lost"]
        for i in lost:
            self._log_failure(i, "reset", replies[i])
        if lost:  # the replacement workers get one more try
            replies.update(self._impl.run({i: requests[i] for i in lost}, self.step_timeout))

        results: list[EnvStep] = []
        failures: list[str] = []
        for i in range(self.n):
            kind, value, _ = reply = replies[i]
            if kind == "ok":
                results.append(value)
                self._last_info[i] = value.info
                self._active[i] = not value.done
            else:
                self._log_failure(i, "reset", reply)
                failures.append(f"env {i} (task_id={task_ids[i]!r}, seed={seeds[i]!r}): {value}")
        if failures:
            raise EnvPoolError("reset failed for " + "; ".join(failures))
        return results

    def step(self, actions: list[str | None]) -> list[EnvStep | None]:
        """Step env ``i`` with ``actions[i]``; ``None`` leaves it alone (its result is ``None``).

        Only environments with an episode in progress (reset and not yet done) may be stepped.
        """
        self._check_open()
        if isinstance(actions, str | bytes) or not hasattr(actions, "__len__"):
            raise ValueError(
                f"actions must be a list with one entry per environment, got {actions!r}"
            )
        if len(actions) != self.n:
            raise ValueError(
                f"expected {self.n} actions (one per environment, None to skip one), got {len(actions)}"
            )
        requests: dict[int, tuple[str, Any]] = {}
        for i, action in enumerate(actions):
            if action is None:
                continue
            if not isinstance(action, str):
                raise ValueError(f"actions[{i}] must be a str or None, got {action!r}")
            if not self._active[i]:
                raise ValueError(
                    f"actions[{i}]: env {i} has no episode in progress (it is done or was never "
                    "reset); pass None for it or reset the pool"
                )
            requests[i] = ("step", action)

        replies = self._impl.run(requests, self.step_timeout)
        results: list[EnvStep | None] = [None] * self.n
        for i in requests:
            kind, value, _ = reply = replies[i]
            if kind == "ok":
                results[i] = value
                self._active[i] = not value.done
                continue
            self._log_failure(i, "step", reply)
            reason = "worker_lost" if kind == "lost" else "env_error"
            results[i] = self._truncated(i, reason, value)
            self._active[i] = False
        return results

    def worker_pids(self) -> list[int]:
        """The pid serving each environment (the pool's own pid for ``inprocess``; -1 if unknown)."""
        self._check_open()
        return self._impl.pids()

    def actors(self) -> list[Any]:
        """The Ray actor handle of each environment (``ray`` backend only)."""
        self._check_open()
        if not isinstance(self._impl, _Ray):
            raise ValueError(f"actors() is for the 'ray' backend; this pool's is {self.backend!r}")
        return [self._impl._ensure(i) for i in range(self.n)]

    @property
    def active(self) -> list[bool]:
        """Whether each environment has an episode in progress."""
        return list(self._active)

    def close(self) -> None:
        """Close every environment and stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._active = [False] * self.n
        self._impl.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EnvPool(n={self.n}, backend={self.backend!r}, {state})"
