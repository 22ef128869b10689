"""Drift on demand: every running instance checked against its release now.

GET /v1/drift                   every app
GET /v1/apps/{env}/{app}/drift  one app (404 for an unknown one)
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel

from kiln.api.access import Grant, requires
from kiln.api.deps import Key
from kiln.controller.drift import DriftReport
from kiln.controller.service import Service
from kiln.model.access import Permission


class DriftFindingOut(BaseModel):
    environment: str
    app: str
    kind: str  # drifted | unowned | missing
    instance: str | None
    release: int | None
    container_id: str | None
    details: list[str]
    action: str  # replace | report | remove | start


class DriftReportOut(BaseModel):
    checked_at: datetime
    checked: int
    findings: list[DriftFindingOut]


def drift_report_out(report: DriftReport) -> DriftReportOut:
    return DriftReportOut(
        checked_at=report.checked_at,
        checked=report.checked,
        findings=[
            DriftFindingOut(
                environment=f.key.environment,
                app=f.key.app,
                kind=f.kind,
                instance=f.instance,
                release=f.release,
                container_id=f.container_id,
                details=list(f.details),
                action=f.action,
            )
            for f in report.findings
        ],
    )


def drift_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["drift"])

    @router.get(
        "/drift",
        summary="Check every app's instances against their releases now (that the token may see)",
    )
    async def drift_all(grant: Annotated[Grant, requires(Permission.READ)]) -> DriftReportOut:
        report = drift_report_out(await service.drift(None))
        report.findings = [f for f in report.findings if grant.sees(f.environment)]
        return report

    @router.get(
        "/apps/{env}/{app}/drift",
        summary="Check one app's instances against their releases now",
        responses={404: {"description": "no such app"}},
        dependencies=[requires(Permission.READ)],
    )
    async def drift_app(key: Key) -> DriftReportOut:
        return drift_report_out(await service.drift(key))

    return router
