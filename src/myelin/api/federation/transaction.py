"""``PUT /_matrix/federation/v1/send/{txnId}``: a transaction of PDUs and EDUs
from another server.

Idempotent per origin and transaction id (the first answer is stored and
given again). PDUs of one room are processed in order, rooms in parallel;
each PDU's result is ``{}`` or ``{"error": ...}``. EDUs go to
``hs.federation_edus``. Any generic
worker may serve it: each PDU persists on its room's persister.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from myelin.domain import MatrixError, bad_json
from myelin.events.event import Event, InvalidEventError
from myelin.events.room_versions import EventFormat
from myelin.federation.auth import authenticate_request
from myelin.http.request import Request
from myelin.http.routing import PathPattern, RouteTable

routes = RouteTable("federation")
logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100

# One /send per origin and txn id at a time in this process: a retry that
# arrives while the first is running waits for its answer.
_running: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}


@routes.put(PathPattern("/_matrix/federation", ("v1",), "/send/{txnId}"))
async def send_transaction(request: Request) -> dict[str, Any]:
    origin = await authenticate_request(request)
    txn_id = request.param("txnId")
    body = await request.json()
    pdus = body.get("pdus", [])
    edus = body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise bad_json("pdus and edus must be lists")
    if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
        raise bad_json(f"A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
    hs = request.hs
    key = (origin, txn_id)
    pending = _running.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    stored = await hs.stores.federation.get_txn_response(origin, txn_id)
    if stored is not None:
        return stored
    future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    _running[key] = future
    try:
        response = {"pdus": await _handle_pdus(request, origin, pdus)}
        await _handle_edus(request, origin, edus)
        await hs.stores.federation.store_txn_response(origin, txn_id, response)
        future.set_result(response)
        return response
    except BaseException as e:
        future.set_exception(e)
        future.exception()  # retrieved: a waiter-less failure is not "never retrieved"
        raise
    finally:
        del _running[key]


async def _handle_pdus(request: Request, origin: str, pdus: list[Any]) -> dict[str, Any]:
    hs = request.hs
    by_room: dict[str, list[Any]] = {}
    for pdu in pdus:
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        if isinstance(room_id, str):
            by_room.setdefault(room_id, []).append(pdu)
        # A PDU without a room (not an event at all, or a v12 create event,
        # which never travels in /send) is dropped.
    results: dict[str, Any] = {}

    async def room(room_id: str, room_pdus: list[Any]) -> None:
        room_version = await hs.stores.rooms.get_room_version(room_id)
        for pdu in room_pdus:
            if room_version is None:
                event_id = pdu.get("event_id")
                if isinstance(event_id, str):
                    results[event_id] = {"error": "Unknown room"}
                continue
            try:
                event_id = _event_id(pdu, room_version)
            except (InvalidEventError, ValueError):
                continue  # not an event: the spec says drop it
            try:
                await hs.federation_events.check_server_acl(room_id, origin)
                event = await hs.federation_events.check_pdu(origin, pdu, room_version)
                await hs.federation_events.on_pdu(origin, event)
                results[event_id] = {}
            except MatrixError as e:
                results[event_id] = {"error": e.message}
            except Exception as e:  # one bad PDU must not fail the others
                logger.exception("processing %s from %s failed", event_id, origin)
                results[event_id] = {"error": f"Internal error: {type(e).__name__}"}

    await asyncio.gather(*(room(r, p) for r, p in by_room.items()))
    return results


def _event_id(pdu: dict[str, Any], room_version: Any) -> str:
    if room_version.event_format == EventFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("no event_id")
        return event_id
    return Event(pdu, room_version).event_id


async def _handle_edus(request: Request, origin: str, edus: Iterable[Any]) -> None:
    valid = [e for e in edus if isinstance(e, dict) and isinstance(e.get("edu_type"), str)]
    if not valid:
        return
    try:
        await request.hs.federation_edus.on_edus(origin, valid)
    except Exception:  # EDUs are best effort; the PDUs' answer stands
        logger.exception("handling EDUs from %s failed", origin)
