"""Account management: whoami, password, deactivation, 3pids, devices."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, not_found
from myelin.http.request import Request
from myelin.http.routing import RouteTable, client_path

routes = RouteTable("client")


@routes.get(client_path("/account/whoami"))
async def whoami(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    response: dict[str, Any] = {"user_id": requester.user_id, "is_guest": requester.is_guest}
    if requester.device_id:
        response["device_id"] = requester.device_id
    return response


@routes.post(client_path("/account/password"), stream="device_lists")
async def change_password(request: Request) -> dict[str, Any]:
    hs = request.hs
    body = await request.json()
    raw = request.raw
    if hs.email_validation is not None and "Authorization" not in raw.headers \
            and "access_token" not in raw.query:
        # Forgotten password: proven by an emailed link instead of a token.
        await hs.threepids.reset_password(body, raw.path)
        return {}
    requester = await request.requester()
    new_password = body.get("new_password")
    if not isinstance(new_password, str) or not new_password:
        raise MatrixError(400, "M_BAD_JSON", "new_password is required")
    hs.auth.check_password_policy(new_password)
    await hs.auth.check_user_interactive_auth(requester, body, request.raw.path, "POST",
                                              "change your password")
    await hs.account_lifecycle.change_password(requester, new_password,
                                               bool(body.get("logout_devices", True)))
    return {}


@routes.post(client_path("/account/deactivate"))
async def deactivate(request: Request) -> dict[str, Any]:
    hs = request.hs
    body = await request.json(allow_empty=True)
    requester = await request.requester()
    await hs.auth.check_user_interactive_auth(requester, body, request.raw.path, "POST",
                                              "deactivate your account")
    unbound = await hs.identity.unbind_all(requester.user_id)
    await hs.account_lifecycle.deactivate(requester.user_id)
    return {"id_server_unbind_result": unbound}


# -- devices ------------------------------------------------------------------

@routes.get(client_path("/devices"))
async def list_devices(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    devices = await request.hs.devices.get_devices(requester.user_id)
    return {"devices": [d.to_json() for d in devices]}


@routes.get(client_path("/devices/{deviceId}"))
async def get_device(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    device = await request.hs.devices.get_device(requester.user_id, request.param("deviceId"))
    if device is None:
        raise not_found("No device found")
    return device.to_json()


@routes.put(client_path("/devices/{deviceId}"), stream="device_lists")
async def update_device(request: Request) -> dict[str, Any]:
    requester = await request.requester(allow_guest=True)
    body = await request.json(allow_empty=True)
    name = body.get("display_name")
    if name is not None and not isinstance(name, str):
        raise MatrixError(400, "M_BAD_JSON", "display_name must be a string")
    await request.hs.devices.rename_device(requester.user_id, request.param("deviceId"), name)
    return {}


@routes.delete(client_path("/devices/{deviceId}"), stream="device_lists")
async def delete_device(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json(allow_empty=True)
    device_id = request.param("deviceId")
    if await request.hs.devices.get_device(requester.user_id, device_id) is None:
        raise not_found("No device found")
    await request.hs.auth.check_user_interactive_auth(requester, body, request.raw.path,
                                                      "DELETE", "delete a device")
    await request.hs.devices.delete_devices(requester.user_id, [device_id])
    return {}


@routes.post(client_path("/delete_devices"), stream="device_lists")
async def delete_devices(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    body = await request.json()
    device_ids = body.get("devices")
    if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
        raise MatrixError(400, "M_BAD_JSON", "devices must be a list of device IDs")
    await request.hs.auth.check_user_interactive_auth(requester, body, request.raw.path,
                                                      "POST", "delete devices")
    await request.hs.devices.delete_devices(requester.user_id, device_ids)
    return {}
