"""Fault injection for the crash-safety tests.

``HIPER_CRASH_AT=<point>`` (or ``<point>@<n>``) makes the process kill itself with SIGKILL — as an
out-of-memory kill or a power cut would, with no ``finally`` blocks run — when it reaches the
named point (the ``n``-th time it is reached, counting from 1, with ``@n``). The points are the
moments where a half-written run folder could be left behind; ``tests/test_crash_safety.py``
kills a run at each of them and checks what a rerun makes of the folder. Unset, this costs one
dictionary lookup per call.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["POINTS", "crash_point"]

#: every point the code base declares
POINTS = (
    "base_model",  # the tiny base model is written (to its temporary folder), not yet renamed
    "sft_step",  # an SFT step was taken after a mid-SFT checkpoint
    "rollout_done",  # an iteration's episodes are played (and gathered), its update not yet taken
    "iteration_logged",  # an iteration's metrics are logged, its checkpoint not yet written
    "checkpoint",  # a checkpoint's files are written (to its temporary folder), not yet renamed
)

_reached: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """Kill this process here when ``HIPER_CRASH_AT`` names ``point``."""
    want = os.environ.get("HIPER_CRASH_AT")
    if not want:
        return
    name, _, nth = want.partition("@")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
