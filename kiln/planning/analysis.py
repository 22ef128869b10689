"""Analysis: the verdict on a release from its real traffic over one window. Pure.

The router counts requests, 5xx answers and a latency histogram per release (cumulative);
a window is the difference between two samples. No data is never a pass: a window with fewer
than ``min_requests`` is inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kiln.model import ReleaseTraffic
from kiln.planning.params import AnalysisRules


class VerdictKind(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    kind: VerdictKind
    reason: str  # the numbers behind it, for the event and `kiln rollout status`


@dataclass(frozen=True, kw_only=True)
class Window:
    """One release's traffic within one window."""

    requests: int = 0
    errors: int = 0
    latency_buckets: tuple[tuple[float, int], ...] = ()  # cumulative, (upper ms, count)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile (an upper estimate)."""
        total = self.latency_buckets[-1][1] if self.latency_buckets else 0
        if total <= 0:
            return None
        rank = q * total
        for upper, count in self.latency_buckets:
            if count >= rank:
                return upper
        return self.latency_buckets[-1][0]


def window_between(start: ReleaseTraffic | None, end: ReleaseTraffic | None) -> Window:
    """``end - start``; a counter that went down means NGINX restarted: ``end`` alone counts."""
    if end is None:
        return Window()
    if start is None or end.requests < start.requests or end.errors < start.errors:
        return Window(requests=end.requests, errors=end.errors, latency_buckets=end.latency_buckets)
    before = dict(start.latency_buckets)
    buckets = tuple(
        (upper, max(0, count - before.get(upper, 0))) for upper, count in end.latency_buckets
    )
    return Window(
        requests=end.requests - start.requests,
        errors=end.errors - start.errors,
        latency_buckets=buckets,
    )


def judge(
    release: int,
    window: Window,
    *,
    stable: Window | None,
    rules: AnalysisRules,
    seconds: float,
) -> Verdict:
    span = f"over {window.requests} requests in {seconds:.0f} s"
    if window.requests < rules.min_requests:
        return Verdict(
            kind=VerdictKind.INCONCLUSIVE,
            reason=(
                f"release {release}: {window.requests} requests in {seconds:.0f} s, fewer than"
                f" the {rules.min_requests} needed to judge"
            ),
        )
    problems: list[str] = []
    rate = window.error_rate
    if rate > rules.max_error_rate:
        problems.append(f"error rate {_pct(rate)} > {_pct(rules.max_error_rate)}")
    if rules.max_error_rate_increase is not None and stable is not None and stable.requests:
        increase = rate - stable.error_rate
        if increase > rules.max_error_rate_increase:
            problems.append(
                f"error rate {_pct(rate)} is {_pct(increase)} above the stable release's"
                f" {_pct(stable.error_rate)} (limit +{_pct(rules.max_error_rate_increase)})"
            )
    for q, limit in ((0.95, rules.max_p95_ms), (0.99, rules.max_p99_ms)):
        if limit is None:
            continue
        value = window.quantile_ms(q)
        if value is not None and value > limit:
            problems.append(f"p{round(q * 100)} ≤ {value:g} ms > {limit:g} ms")
    if problems:
        return Verdict(
            kind=VerdictKind.FAIL, reason=f"release {release}: {'; '.join(problems)} {span}"
        )
    p95 = window.quantile_ms(0.95)
    latency = f", p95 ≤ {p95:g} ms" if p95 is not None else ""
    return Verdict(
        kind=VerdictKind.PASS,
        reason=f"release {release}: error rate {_pct(rate)}{latency} {span}",
    )


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"
