"""What user step code and users' terminals import: StepContext, the CLI and the REST client.

Nothing in this package imports Django.
"""

from stepworks.context import MetricPoint, StepContext

__all__ = ["MetricPoint", "StepContext"]
