"""Schemathesis against a live kiln API: every operation of the OpenAPI document with its
boundary cases (schemathesis' coverage phase: each limit, just past it, each missing or wrong
part, wrong methods) and with fuzzed data that fits it and that does not; then call sequences
along the document's links.

The server must never answer 5xx, and every answer must be what the document says (status,
content type, headers, body schema). Findings are collected, not stopped at, so one run lists
them all. The inputs are the same every run (a red run is reproducible); about a minute in
all. ``KILN_FUZZ_EXAMPLES`` / ``KILN_FUZZ_SCENARIOS`` go deeper locally.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.errors import FailureGroup

from .target import TOKEN, Tally, engine_target, fake_target

EXAMPLES = int(os.environ.get("KILN_FUZZ_EXAMPLES", "32"))
"""Per operation and mode: 13 operations x 2 modes x up to 32, after ~400 boundary cases."""
SCENARIOS = int(os.environ.get("KILN_FUZZ_SCENARIOS", "50"))
"""Call sequences along the links, up to 8 calls each."""
MIN_REQUESTS = 1_000
# The token as schemathesis' own auth: it then knows the header is supplied, and a negative
# case that breaks only the header is not mistaken for one we accepted.
CONFIG = schemathesis.Config.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}})

# Streams that never end by themselves: a fuzzer cannot read them to the end. Their answers
# before the stream starts are covered by tests/api.
ENDLESS = {"GET /v1/events/stream"}
# Stops the server mid-run; covered by tests/api and tests/cli.
DISRUPTIVE = {"POST /v1/shutdown"}

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # findings are collected: nothing to shrink
    suppress_health_check=list(HealthCheck),
)


class Findings:
    """Check failures by (operation, check), with the first example of each and a count."""

    def __init__(self) -> None:
        self.examples: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def add(self, label: str, failure: BaseException) -> None:
        parts = failure.exceptions if isinstance(failure, FailureGroup) else (failure,)
        for part in parts:
            key = f"{label}: {getattr(part, 'title', type(part).__name__)}"
            self.counts[key] = self.counts.get(key, 0) + 1
            self.examples.setdefault(key, str(failure)[:2500])

    def report(self) -> str:
        return "\n\n".join(
            f"== {key} (x{self.counts[key]})\n{example}" for key, example in self.examples.items()
        )


def excluded_checks(case: Case) -> list[Any]:
    """Checks that do not apply to this case: where JSON Schema cannot say all, kiln refuses
    schema-valid input with a documented 422. The spec in a deploy is YAML checked against
    /v1/schema (422 spec_invalid), ``env`` without ``app`` filters nothing (422), and an admin
    token is never limited to environments (422). A build's body is any bytes to the schema but
    must be a tar the engine can build (400)."""
    query = case.query or {}
    # A promotion or an approval between two known environments out of their configured
    # order is a documented 422 too: the order lives in the settings file, not the schema.
    if case.operation.label in ("POST /v1/promotions", "POST /v1/approvals"):
        return [schemathesis.checks.positive_data_acceptance]
    body = case.body if isinstance(case.body, dict) else {}
    if (
        case.operation.label in ("POST /v1/deploy", "POST /v1/images/build")
        or (case.operation.label == "GET /v1/events" and "env" in query and "app" not in query)
        or (
            case.operation.label == "POST /v1/tokens"
            and body.get("role") == "admin"
            and body.get("environments")
        )
    ):
        return [schemathesis.checks.positive_data_acceptance]
    # A secret's value is the raw body: an empty one is a documented 422, and the document
    # cannot bound a binary body's length in a way schemathesis generates from.
    if case.operation.label == "PUT /v1/apps/{env}/{app}/secrets/{name}" and not case.body:
        return [schemathesis.checks.positive_data_acceptance]
    # A sequence may deploy the same app again after deleting it: the GET that follows finds
    # the new app, which schemathesis (tracking URLs, not apps) takes for the deleted one.
    if case.operation.label == "GET /v1/apps/{env}/{app}":
        return [schemathesis.checks.use_after_free]
    return []


def no_follow(case: Case) -> None:
    # follow=true on logs never ends by itself either.
    if case.query and str(case.query.get("follow", "")).lower() in ("true", "1", "on", "yes"):
        case.query = {**case.query, "follow": "false"}


def assert_clean(findings: Findings, tally: Tally, minimum: int) -> None:
    assert tally.server_errors == 0, findings.report()
    assert not findings.examples, (
        f"{len(findings.examples)} kinds of findings:\n{findings.report()}"
    )
    assert len(tally.statuses) >= minimum, f"only {len(tally.statuses)} requests"


def test_every_operation_answers_fuzzed_input_as_its_document_says(tmp_path: Path) -> None:
    findings = Findings()
    with engine_target(tmp_path) as (url, app, tally):
        schema = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)
        operations = [result.ok() for result in schema.get_all_operations()]
        fuzzed = [op for op in operations if op.label not in ENDLESS | DISRUPTIVE]
        assert len(fuzzed) == len(operations) - 2, [op.label for op in operations]

        def call_and_check(case: Case) -> None:
            no_follow(case)
            try:
                case.call_and_validate(
                    base_url=url, timeout=30, excluded_checks=excluded_checks(case)
                )
            except (FailureGroup, AssertionError) as failure:
                findings.add(case.operation.label, failure)

        for operation in fuzzed:
            for case in schema.iter_coverage_cases(
                operation,
                generation_modes=list(GenerationMode),
                generation_config=schema.config.generation_for(
                    operation=operation, phase="coverage"
                ),
            ):
                call_and_check(case)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz = given(case=operation.as_strategy(generation_mode=mode))(call_and_check)
                try:
                    SETTINGS(fuzz)()
                except Unsatisfiable:
                    # Nothing to get wrong: the operation takes no input (GET /healthz).
                    assert mode is GenerationMode.NEGATIVE, operation.label
    print(f"fuzz: {len(tally.statuses)} requests, statuses {sorted(set(tally.statuses))}")
    assert_clean(findings, tally, MIN_REQUESTS)


def test_call_sequences_along_the_links_answer_as_the_document_says() -> None:
    findings = Findings()
    with fake_target() as (url, service, tally, access):
        home_token = access.tokens[:1]
        document = _document()
        base = schemathesis.openapi.from_dict(document, config=CONFIG).as_state_machine()

        class KilnMachine(base):  # type: ignore[misc, valid-type]
            def setup(self) -> None:
                # Every sequence starts from the same empty kiln, so replaying a sequence
                # gets the same answers.
                service.__init__()  # type: ignore[misc]
                access.tokens[:] = home_token  # tokens made by an earlier sequence go
                access.audit.clear()

            def get_call_kwargs(self, case: Case) -> dict[str, Any]:
                return {"base_url": url, "timeout": 30}

            def before_call(self, case: Case) -> None:
                no_follow(case)

            def validate_response(
                self, response: Any, case: Case, additional_checks: Any = None, **kwargs: Any
            ) -> None:
                try:
                    case.validate_response(
                        response,
                        additional_checks=additional_checks,
                        excluded_checks=excluded_checks(case),
                        transport_kwargs=kwargs or None,
                        recorder=self.recorder,
                    )
                except (FailureGroup, AssertionError) as failure:
                    findings.add(f"stateful {case.operation.label}", failure)

        KilnMachine.run(
            settings=hypothesis.settings(
                SETTINGS, max_examples=SCENARIOS, stateful_step_count=8, phases=[Phase.generate]
            )
        )
    statuses = sorted(set(tally.statuses))
    print(f"stateful fuzz: {len(tally.statuses)} requests, statuses {statuses}")
    assert 201 in statuses, "no sequence created a release: the links are not being followed"
    assert_clean(findings, tally, SCENARIOS)


def _document() -> dict[str, Any]:
    from kiln.api import create_app

    from ..api.fake_service import FakeService

    return create_app(FakeService(), token=TOKEN).openapi()
