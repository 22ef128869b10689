"""What a token limited to environments may read of ``GET /metrics``.

    kiln's exposition ──parse (prometheus_client)──▶ families
        ──EnvironmentView(sees)──▶ samples whose ``env`` label the token sees ──▶ text

A token that sees every environment gets kiln's exposition as it is. A token limited to
environments gets only the series of apps in those environments (every series with an
``env`` label: instances, traffic, restarts, drift, instances by state); kiln-wide series —
those without an ``env`` label, or with an empty one — are left out. None of them names an
app, but each is a sum over every environment or the shared host: events by kind and rollouts
by result count what happens in production, API latency by route, reconcile rounds and NGINX
reloads show other environments' activity, the host series the machine they share. An
operator's scraper holds a token that sees every environment; an environment's team reads its
own apps. A family left without samples is left out as a whole.

Filtered on the text, not on the registry: the control plane renders its registry behind
``Service.metrics()`` (bytes), and the round trip through prometheus_client's own parser and
``generate_latest`` gives back kiln's exposition byte for byte (tests/api/test_metrics_access.py).
``EnvironmentView`` takes any collector, so a registry can be narrowed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

ENV_LABEL = "env"
"""The label every per-app series of kiln carries (``kiln.metrics.exposition``)."""


class _Source(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class EnvironmentView(Collector):
    """The families of ``source`` with only the samples of an environment ``sees`` accepts."""

    def __init__(self, source: _Source, sees: Callable[[str], bool]) -> None:
        self._source = source
        self._sees = sees

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            kept = [
                sample
                for sample in family.samples
                if (env := sample.labels.get(ENV_LABEL)) and self._sees(env)
            ]
            if not kept:
                continue
            narrowed = Metric(family.name, family.documentation, family.type, family.unit)
            narrowed.samples = kept
            yield narrowed


class _Parsed:
    def __init__(self, text: bytes) -> None:
        self._text = text

    def collect(self) -> Iterable[Metric]:
        return text_string_to_metric_families(self._text.decode("utf-8"))


def exposition_for(text: bytes, environments: frozenset[str]) -> bytes:
    """kiln's exposition ``text`` as a token limited to ``environments`` may read it (empty:
    the token sees every environment, and gets ``text`` unchanged)."""
    if not environments:
        return text
    return generate_latest(EnvironmentView(_Parsed(text), environments.__contains__))
