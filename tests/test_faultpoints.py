"""The fault suite's fault points: armed only by STEPWORKS_FAULT_POINTS, firing only in a
thread that runs a step's first attempt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workspaces import faultpoints

ROOT = Path(__file__).resolve().parent.parent


def test_points_are_parsed_and_a_misspelt_one_is_refused() -> None:
    assert faultpoints._parse("after_claim@0.5, output_saved") == {
        "after_claim": 0.5,
        "output_saved": 1.0,
    }
    with pytest.raises(ValueError, match="after_clam"):
        faultpoints._parse("after_clam")


def _reach(attempt: int) -> int:
    code = (
        "from workspaces import faultpoints\n"
        f"faultpoints.attempt.set({attempt})\n"
        "faultpoints.reach('after_claim')\n"
    )
    env = {**os.environ, "STEPWORKS_FAULT_POINTS": "after_claim"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=False).returncode


def test_an_armed_point_kills_a_first_attempt_and_spares_the_rest() -> None:
    assert _reach(1) == -signal.SIGKILL
    assert _reach(2) == 0  # a retry: the fault struck this step once already
    assert _reach(0) == 0  # no step on this thread (a reaper, a request)


def test_unarmed_points_do_nothing() -> None:
    assert "STEPWORKS_FAULT_POINTS" not in os.environ  # as in every deployment
    token = faultpoints.attempt.set(1)
    try:
        faultpoints.reach("after_claim")  # returns: this process lives on
    finally:
        faultpoints.attempt.reset(token)
