"""The runtime fingerprint: what a step's result depends on besides its code, params and inputs.

It enters every cache key (DECISIONS, "Cache key"), and a worker refuses to claim a step whose
fingerprint differs from its own. So it names only what changes results: Python major.minor,
the OS and CPU architecture, the versions of the packages step code may import (the `steps`
extra) and the output format; never Django, dev tools or host names, which would split the
cache between identical workers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import sys
from functools import cache
from importlib import metadata
from typing import Any

from stepworks.outputs import OUTPUT_FORMAT_VERSION

# The `steps` extra in pyproject.toml, by distribution name.
STEP_PACKAGES = (
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "plotly",
    "matplotlib",
)


def runtime_description() -> dict[str, Any]:
    """The parts of the fingerprint (a missing package is recorded as None)."""
    return copy.deepcopy(_description())


@cache
def _description() -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in STEP_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "system": platform.system(),
        "machine": platform.machine(),
        "packages": packages,
        "output_format": OUTPUT_FORMAT_VERSION,
    }


@cache
def runtime_fingerprint() -> str:
    """sha256 of the canonical JSON of `runtime_description()` (cached: installs need a restart)."""
    canonical = json.dumps(_description(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
