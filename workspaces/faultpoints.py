"""Named fault points: places where the fault suite (`python -m faults`) kills a worker.

A process started with `STEPWORKS_FAULT_POINTS=after_claim@0.3,output_saved` dies by SIGKILL
when it reaches a named point (each time, or with the given probability), exactly as a
machine that loses power there would; only during a step's first attempt (`attempt`, set by
the worker thread that runs it), so a fault strikes a step once (a step that dies on every
attempt is the fault suite's poison scenario), and never in a thread that runs no step (the
reaper's re-sends, a web request). Unset, as everywhere but in the fault suite, `reach()` costs one
dictionary look-up. The points (where each sits says what it tests):

- `after_claim`: a worker's claim of a step has committed; the step never runs.
- `output_saved`: an output's bytes are in the store (renamed into place); its row is not.
- `queued_not_sent`: steps were queued and committed; their messages were never sent.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import signal

log = logging.getLogger(__name__)

POINTS = ("after_claim", "output_saved", "queued_not_sent")


def _parse(text: str) -> dict[str, float]:
    """`name[@probability],...` -> {name: probability}; an unknown name is an error, so a
    typo cannot make a fault scenario silently inject nothing."""
    armed: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, chance = item.partition("@")
        if name not in POINTS:
            raise ValueError(f"STEPWORKS_FAULT_POINTS: unknown point {name!r} (known: {POINTS})")
        armed[name] = float(chance) if chance else 1.0
    return armed


_armed = _parse(os.environ.get("STEPWORKS_FAULT_POINTS", ""))
attempt: contextvars.ContextVar[int] = contextvars.ContextVar("attempt", default=0)


def reach(name: str) -> None:
    """Die here if the fault suite armed this point (and the dice say so)."""
    chance = _armed.get(name)
    if chance is not None and attempt.get() == 1 and random.random() < chance:
        log.warning("fault point %s: killing process %s", name, os.getpid())
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
