"""``kiln top``: a live view of apps, releases and instances — CPU, memory, request and error
rates — read from ``GET /metrics`` (the numbers Prometheus and the canary analysis see).

Rates are the difference of two scrapes over the time between them, so the first frame shows
totals only; each refresh (``--interval``) is one scrape."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context

if TYPE_CHECKING:
    from rich.console import Group

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    at: float
    values: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))

    def get(self, name: str) -> dict[Labels, float]:
        return self.values.get(name, {})


def parse(text: str, at: float) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape(at=at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scrape.values[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return scrape


def _label(labels: Labels, name: str) -> str:
    return dict(labels).get(name, "")


def _rate(now: Scrape, before: Scrape | None, name: str, labels: Labels) -> float | None:
    if before is None or now.at <= before.at:
        return None
    current, previous = now.get(name).get(labels), before.get(name).get(labels)
    if current is None or previous is None or current < previous:
        return None  # new, or the counter started again (NGINX restarted)
    return (current - previous) / (now.at - before.at)


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(now: Scrape, before: Scrape | None, app_filter: str | None = None) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    releases = Table(title="releases", expand=True)
    for column in ("app", "release", "instances", "ready", "req/s", "5xx/s", "error %", "requests"):
        releases.add_column(column, justify="left" if column == "app" else "right")
    ready = now.get("kiln_instance_ready")
    per_release: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for labels, value in ready.items():
        per_release[_label(labels, "env"), _label(labels, "app"), _label(labels, "release")].append(
            value
        )
    traffic = now.get("kiln_app_requests_total")
    keys = set(per_release) | {
        (_label(ls, "env"), _label(ls, "app"), _label(ls, "release")) for ls in traffic
    }
    for env, app, release in sorted(keys, key=lambda k: (k[0], k[1], int(k[2] or 0))):
        if app_filter and app_filter not in (app, f"{env}/{app}"):
            continue
        key: Labels = (("app", app), ("env", env), ("release", release))
        rate = _rate(now, before, "kiln_app_requests_total", key)
        errors = _rate(now, before, "kiln_app_errors_total", key)
        share = (errors / rate * 100) if rate and errors is not None else None
        states = per_release.get((env, app, release), [])
        style = "red" if share is not None and share >= 1 else ""
        releases.add_row(
            f"{env}/{app}",
            release,
            str(len(states)),
            str(int(sum(states))),
            _num(rate),
            _num(errors),
            Text(_num(share), style=style),
            _num(traffic.get(key), "{:.0f}"),
        )
    instances = Table(title="instances", expand=True)
    for column in ("app", "release", "instance", "ready", "CPU %", "memory", "checks failed"):
        instances.add_column(column, justify="left" if column in ("app", "instance") else "right")
    cpu = now.get("kiln_instance_cpu_seconds_total")
    memory = now.get("kiln_instance_memory_bytes")
    failed_checks = now.get("kiln_instance_health_checks_total")
    for labels in sorted(ready, key=lambda ls: (_label(ls, "app"), _label(ls, "instance"))):
        env, app = _label(labels, "env"), _label(labels, "app")
        if app_filter and app_filter not in (app, f"{env}/{app}"):
            continue
        busy = _rate(now, before, "kiln_instance_cpu_seconds_total", labels)
        failed = failed_checks.get(tuple(sorted((*labels, ("result", "fail")))))
        instances.add_row(
            f"{env}/{app}",
            _label(labels, "release"),
            _label(labels, "instance"),
            Text("yes", style="green") if ready[labels] else Text("no", style="yellow"),
            _num(busy * 100 if busy is not None else None),
            _bytes(memory.get(labels)),
            _num(failed, "{:.0f}"),
        )
    host = Text()
    cpus = next(iter(now.get("kiln_host_cpus").values()), None)
    idle_rate = _rate(now, before, "kiln_host_cpu_seconds_total", (("mode", "idle"),))
    total = next(iter(now.get("kiln_host_memory_total_bytes").values()), None)
    available = next(iter(now.get("kiln_host_memory_available_bytes").values()), None)
    busy_host = (1 - idle_rate / cpus) * 100 if idle_rate is not None and cpus else None
    host.append(f"host: CPU {_num(busy_host)}% of {_num(cpus, '{:.0f}')} CPUs, ")
    used = total - available if total is not None and available is not None else None
    host.append(f"memory {_bytes(used)} of {_bytes(total)} used")
    if cpu and not before:
        host.append("   (rates from the next refresh)", style="dim")
    return Group(host, releases, instances)


def top(
    app: Annotated[
        str | None, typer.Argument(help="Only this app (APP or ENV/APP).", show_default=False)
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.5, max=3600, help="Seconds between frames.")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame (after two scrapes) and exit.")
    ] = False,
) -> None:
    """A live view of apps, releases and instances: request and error rates per release, CPU
    and memory per instance, the host. Ctrl-C ends it.

    Examples:  kiln top          kiln top web -i 5          kiln top --once
    """
    from rich.live import Live

    client = context.client()
    before = parse(client.metrics_text(), time.monotonic())
    console = context.out()
    if once:
        time.sleep(min(interval, 1.0))
        now = parse(client.metrics_text(), time.monotonic())
        console.print(render(now, before, app))
        return
    try:
        with Live(render(before, None, app), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                now = parse(client.metrics_text(), time.monotonic())
                live.update(render(now, before, app), refresh=True)
                before = now
    except KeyboardInterrupt:
        return
