"""kiln's metrics: Prometheus exposition (``KilnMetrics``) and the background sampler of
instance CPU and memory (``StatsSampler``). See README.md."""

from kiln.metrics.exposition import (
    CONTENT_TYPE,
    InstanceSample,
    KilnMetrics,
    Snapshot,
    restart_reason,
)
from kiln.metrics.sampler import StatsSampler

__all__ = [
    "CONTENT_TYPE",
    "InstanceSample",
    "KilnMetrics",
    "Snapshot",
    "StatsSampler",
    "restart_reason",
]
