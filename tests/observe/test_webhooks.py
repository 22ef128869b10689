"""Outgoing webhooks: a local receiver gets the chosen event kinds, signed, after retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kiln.config import Settings
from kiln.config.file import EventsSettings, FileSettings, WebhookSettings
from kiln.controller.root import assemble_engine
from kiln.drivers.fake import FakeDriver
from kiln.errors import InvalidInput
from kiln.router.fake import FakeRouter
from kiln.store.sqlite import SqliteStore
from tests.controller.fake_health import FakeHealth
from tests.controller.world import eventually, spec

SECRET = b"s3cret-for-tests"


@dataclass
class Receiver:
    fail_first: int = 0  # answer 500 to this many requests first
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.attempts += 1
            if state.attempts <= state.fail_first:
                self.send_response(500)
            else:
                state.received.append((dict(self.headers), body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _engine(tmp_path: Path, hook: WebhookSettings):  # type: ignore[no-untyped-def]
    settings = Settings(
        home=tmp_path,
        resync_seconds=0.2,
        file=FileSettings(events=EventsSettings(webhooks=(hook,))),
    )
    driver = FakeDriver()
    driver.add_image("web:v1")
    health = FakeHealth()
    health.healthy_releases = {1, 2}
    engine = assemble_engine(
        settings=settings,
        store=SqliteStore(tmp_path / "kiln.db"),
        driver=driver,
        router=FakeRouter(),
        health=health,  # type: ignore[arg-type]
    )
    health.bind(engine.plane.wake_app_of)
    return engine


@pytest.fixture
async def secret_file(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "hook.secret"
    path.write_bytes(SECRET + b"\n")
    yield path


async def test_a_chosen_event_reaches_the_receiver_signed_after_retries(
    tmp_path: Path, receiver: Receiver, secret_file: Path
) -> None:
    receiver.fail_first = 2  # two 500s: the third attempt delivers
    hook = WebhookSettings(url=receiver.url, types=("rollout.succeeded",), secret_file=secret_file)
    engine = _engine(tmp_path, hook)
    engine.plane.webhooks._first_delay = 0.05  # type: ignore[union-attr]
    await engine.start()
    try:
        await engine.deploy(spec(instances=1), message="", who="t")
        await eventually(lambda: receiver.received, timeout=15)
    finally:
        await engine.close()
    headers, body = receiver.received[0]
    payload = json.loads(body)
    assert payload["kind"] == "rollout.succeeded" and payload["app"] == "web"
    assert headers["X-Kiln-Event"] == "rollout.succeeded"
    assert headers["X-Kiln-Delivery"] == str(payload["id"])
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Kiln-Signature"], expected)
    assert receiver.attempts == 3
    # Only the chosen kind was sent.
    assert [json.loads(b)["kind"] for _, b in receiver.received] == ["rollout.succeeded"]


async def test_a_receiver_that_never_answers_costs_one_webhook_failed_event(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 1000
    hook = WebhookSettings(url=receiver.url, types=("release",), max_attempts=3)
    engine = _engine(tmp_path, hook)
    engine.plane.webhooks._first_delay = 0.01  # type: ignore[union-attr]
    await engine.start()
    try:
        await engine.deploy(spec(instances=1), message="", who="t")

        # The test's own connection: the engine's refuses calls from this (the loop's) thread.
        reader = SqliteStore(tmp_path / "kiln.db")

        def failed() -> list[object]:
            return [e for e in reader.list_events() if e.kind == "webhook.failed"]

        await eventually(failed, timeout=15)
        await asyncio.sleep(0)
        assert "HTTP 500 on attempt 3" in failed()[0].reason  # type: ignore[attr-defined]
    finally:
        await engine.close()
    assert receiver.attempts == 3


def test_an_unknown_type_in_the_settings_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="rollouts"):
        _engine(tmp_path, WebhookSettings(url="http://127.0.0.1:9/x", types=("rollouts",)))


def test_the_settings_file_takes_webhooks_and_log_retention(tmp_path: Path) -> None:
    from kiln.config.file import load_file_settings

    path = tmp_path / "settings.yaml"
    path.write_text(
        "events:\n  webhooks:\n    - url: http://127.0.0.1:9000/hook\n"
        "      types: [rollout.failed, drift]\n"
        "logs:\n  max_bytes_per_app: 1000000\n  format: json\n"
    )
    loaded = load_file_settings(path)
    assert loaded.events.webhooks[0].types == ("rollout.failed", "drift")
    assert loaded.logs.format == "json"
    path.write_text("events:\n  webhooks:\n    - url: ftp://x\n")
    with pytest.raises(InvalidInput, match=r"events\.webhooks\.0\.url"):
        load_file_settings(path)


# --- at least once across restarts ---------------------------------------------------------

CHOSEN = ("release", "rollout.started", "rollout.succeeded")


def stored_ids(tmp_path: Path) -> list[int]:
    """Ids of the stored events a CHOSEN receiver wants, read on the test's own connection."""
    from kiln.model import kinds_matching

    reader = SqliteStore(tmp_path / "kiln.db")
    try:
        return [e.id for e in reader.list_events(limit=10_000, kinds=kinds_matching(CHOSEN))]
    finally:
        reader.close()


def delivered_ids(receiver: Receiver) -> list[int]:
    ids = [int(headers["X-Kiln-Delivery"]) for headers, _ in receiver.received]
    assert ids == [json.loads(body)["id"] for _, body in receiver.received]
    return ids


async def test_events_kiln_had_not_sent_when_it_stopped_are_sent_by_the_next_kiln(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 10**6  # down while the first kiln runs
    hook = WebhookSettings(url=receiver.url, types=CHOSEN, max_attempts=20)
    first = _engine(tmp_path, hook)
    first.plane.webhooks._first_delay = 30  # type: ignore[union-attr]  # stuck in its backoff
    await first.start()
    try:
        await first.deploy(spec(instances=1), message="", who="t")
        reader = SqliteStore(tmp_path / "kiln.db")
        try:
            await eventually(
                lambda: any(e.kind == "rollout.succeeded" for e in reader.list_events(limit=500))
            )
        finally:
            reader.close()
        await first.plane.events.flush()
        # Its first POST answered (500), it waits out its backoff: no request is in
        # flight for the receiver to take once it is up again.
        await eventually(lambda: receiver.attempts >= 1)
    finally:
        await first.close()
    recorded = stored_ids(tmp_path)
    assert len(recorded) >= 3 and receiver.received == []

    receiver.fail_first = 0
    receiver.attempts = 0
    second = _engine(tmp_path, hook)
    await second.start()
    try:
        await eventually(lambda: len(receiver.received) >= len(recorded), timeout=15)
        await second.plane.events.flush()
    finally:
        await second.close()
    # Every event the first kiln recorded, in order, once; then whatever the second one added.
    delivered = delivered_ids(receiver)
    assert delivered[: len(recorded)] == recorded
    assert delivered == sorted(set(delivered))
    kinds = [json.loads(body)["kind"] for _, body in receiver.received[: len(recorded)]]
    assert kinds[0] == "release.created" and "rollout.succeeded" in kinds


async def test_a_restart_sends_nothing_twice_when_everything_was_delivered(
    tmp_path: Path, receiver: Receiver
) -> None:
    hook = WebhookSettings(url=receiver.url, types=CHOSEN)
    first = _engine(tmp_path, hook)
    await first.start()
    try:
        await first.deploy(spec(instances=1), message="", who="t")
        await eventually(
            lambda: any(json.loads(b)["kind"] == "rollout.succeeded" for _, b in receiver.received)
        )
        await first.plane.events.flush()
        await eventually(lambda: delivered_ids(receiver) == stored_ids(tmp_path))
    finally:
        await first.close()
    before = len(receiver.received)

    second = _engine(tmp_path, hook)
    await second.start()
    try:
        await second.deploy(spec(instances=1, extra="env: {V: '2'}\n"), message="", who="t")
        await eventually(
            lambda: (
                [json.loads(b)["kind"] for _, b in receiver.received].count("rollout.succeeded")
                == 2
            )
        )
        await second.plane.events.flush()
        await eventually(lambda: delivered_ids(receiver) == stored_ids(tmp_path))
    finally:
        await second.close()
    assert len(receiver.received) > before
    assert len(set(delivered_ids(receiver))) == len(receiver.received)  # no event twice


async def test_a_long_backlog_sends_the_newest_events_and_names_what_it_left_out(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln.controller import webhooks

    receiver.fail_first = 10**6
    hook = WebhookSettings(url=receiver.url, types=CHOSEN, max_attempts=20)
    first = _engine(tmp_path, hook)
    first.plane.webhooks._first_delay = 30  # type: ignore[union-attr]
    await first.start()
    try:
        for version in range(4):
            await first.deploy(
                spec(instances=1, extra=f"env: {{V: '{version}'}}\n"), message="", who="t"
            )
        await first.plane.events.flush()
        # Its first POST answered (500), it waits out its backoff: no request is in
        # flight for the receiver to take once it is up again.
        await eventually(lambda: receiver.attempts >= 1)
    finally:
        await first.close()
    recorded = stored_ids(tmp_path)

    receiver.fail_first = 0
    monkeypatch.setattr(webhooks, "RESUME_COUNT", 5)
    second = _engine(tmp_path, hook)
    await second.start()
    try:
        reader = SqliteStore(tmp_path / "kiln.db")
        try:

            def noted() -> list[str]:
                return [
                    e.reason for e in reader.list_events(limit=500) if e.kind == "webhook.failed"
                ]

            await eventually(noted)
            assert "were not sent (kiln was stopped or the receiver was behind)" in noted()[0]
        finally:
            reader.close()
        await second.plane.events.flush()
    finally:
        await second.close()
    # What the backlog sent (if the newest 5 ids, which include the second kiln's own start
    # events, held any chosen one) is in order and within the bound; the oldest was left out.
    delivered = delivered_ids(receiver)
    assert delivered == sorted(set(delivered))
    assert recorded[0] not in delivered
    assert len([i for i in delivered if i in recorded]) <= 5  # at most RESUME_COUNT
