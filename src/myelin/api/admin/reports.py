"""Synapse's ``v1/event_reports`` admin API: list (from/limit/dir/room_id/
user_id), one report with the reported event, and deleting a report, over
the reports store the client's ``/report`` endpoints fill. Admins only."""

from __future__ import annotations

from typing import Any

from myelin.api.admin.common import admin, direction, nonnegative
from myelin.domain import invalid_param, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path
from myelin.storage.stores.reports import EventReport

routes = RouteTable("client")

V1 = "/_synapse/admin/v1"


async def _entry(request: Request, report: EventReport) -> dict[str, Any]:
    hs = request.hs
    details = await hs.admin_rooms.details(report.room_id)
    event = await hs.stores.events.get_event(report.event_id)
    out = report.to_json()
    out["name"] = details["name"] if details else None
    out["canonical_alias"] = details["canonical_alias"] if details else None
    out["sender"] = event.event.sender if event else None
    return out


@routes.get(plain_path(V1, "/event_reports"), main_only=True)
async def list_reports(request: Request) -> dict[str, Any]:
    await admin(request)
    start = nonnegative(request, "from", 0)
    limit = nonnegative(request, "limit", 100)
    reports, total = await request.hs.stores.reports.list_event_reports(
        start=start, limit=limit, newest_first=direction(request, "b") == "b",
        room_id=request.query_str("room_id"), user_id=request.query_str("user_id"))
    body: dict[str, Any] = {"event_reports": [await _entry(request, r) for r in reports],
                            "total": total}
    if start + len(reports) < total:
        body["next_token"] = start + len(reports)
    return body


def _report_id(request: Request) -> int:
    raw = request.param("reportId")
    if not raw.isdigit():
        raise invalid_param("The report_id parameter must be a string representing a "
                            "positive integer.")
    return int(raw)


@routes.get(plain_path(V1, "/event_reports/{reportId}"), main_only=True)
async def get_report(request: Request) -> dict[str, Any]:
    await admin(request)
    report = await request.hs.stores.reports.get_event_report(_report_id(request))
    if report is None:
        raise not_found("Event report not found")
    out = await _entry(request, report)
    event = await request.hs.stores.events.get_event(report.event_id)
    out["event_json"] = event.event.get_pdu_json() if event else None
    return out


@routes.delete(plain_path(V1, "/event_reports/{reportId}"), main_only=True)
async def delete_report(request: Request) -> dict[str, Any]:
    await admin(request)
    if not await request.hs.stores.reports.delete_event_report(_report_id(request)):
        raise not_found("Event report not found")
    return {}
