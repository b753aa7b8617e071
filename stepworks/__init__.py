"""What user step code and users' terminals import: StepContext, the CLI and the REST client.

Nothing in this package imports Django.
"""

from typing import Any

from stepworks.context import MetricPoint, StepContext

__all__ = ["Client", "MetricPoint", "StepContext"]


def __getattr__(name: str) -> Any:
    # The client (and httpx) load on first use: step code imports this package in the light
    # zygote, which should stay light.
    if name == "Client":
        from stepworks.client import Client

        return Client
    raise AttributeError(f"module 'stepworks' has no attribute {name!r}")
