"""kiln's metrics: Prometheus exposition (``KilnMetrics``) and the background sampler of
instance CPU and memory (``StatsSampler``), which also runs the event loop's lag sampler
(``LoopLagSampler``), and what a token limited to environments may read of it
(``exposition_for``). See README.md."""

from kiln.metrics.exposition import (
    CONTENT_TYPE,
    InstanceSample,
    KilnMetrics,
    Snapshot,
    restart_reason,
)
from kiln.metrics.loop_lag import LoopLagSampler
from kiln.metrics.sampler import StatsSampler
from kiln.metrics.visibility import EnvironmentView, exposition_for

__all__ = [
    "CONTENT_TYPE",
    "EnvironmentView",
    "InstanceSample",
    "KilnMetrics",
    "LoopLagSampler",
    "Snapshot",
    "StatsSampler",
    "exposition_for",
    "restart_reason",
]
