"""kiln's metrics: Prometheus exposition (``KilnMetrics``) and the background sampler of
instance CPU and memory (``StatsSampler``), which also runs the event loop's lag sampler
(``LoopLagSampler``). See README.md."""

from kiln.metrics.exposition import (
    CONTENT_TYPE,
    InstanceSample,
    KilnMetrics,
    Snapshot,
    restart_reason,
)
from kiln.metrics.loop_lag import LoopLagSampler
from kiln.metrics.sampler import StatsSampler

__all__ = [
    "CONTENT_TYPE",
    "InstanceSample",
    "KilnMetrics",
    "LoopLagSampler",
    "Snapshot",
    "StatsSampler",
    "restart_reason",
]
