"""matrix-nio, a real client library, manages its account against a running server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DeleteDevicesAuthResponse,
    DeleteDevicesResponse,
    DevicesResponse,
    LoginError,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    UpdateDeviceResponse,
    WhoamiError,
    WhoamiResponse,
)

from tests.support.server import ServerProcess

PASSWORD = "nio password"
_ids = itertools.count()


def fresh(prefix: str = "nio") -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture
async def client_factory(server: ServerProcess,
                         ) -> AsyncIterator[list[AsyncClient]]:
    """Collects the clients a test makes and closes them afterwards."""
    clients: list[AsyncClient] = []
    yield clients
    for client in clients:
        await client.close()


def new_client(server: ServerProcess, clients: list[AsyncClient], user: str = "",
               ) -> AsyncClient:
    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False)
    client = AsyncClient(server.base_url, user, config=config)
    clients.append(client)
    return client


async def test_register_login_whoami_devices_logout(
        server: ServerProcess, client_factory: list[AsyncClient]) -> None:
    name = fresh()
    user_id = f"@{name}:{server.server_name}"

    registrar = new_client(server, client_factory)
    registered = await registrar.register(name, PASSWORD, device_name="nio signup")
    assert isinstance(registered, RegisterResponse), registered
    assert registered.user_id == user_id
    assert registered.access_token and registered.device_id

    client = new_client(server, client_factory, user=name)
    logged_in = await client.login(PASSWORD, device_name="nio laptop")
    assert isinstance(logged_in, LoginResponse), logged_in
    assert logged_in.user_id == user_id
    assert client.logged_in and client.access_token == logged_in.access_token

    me = await client.whoami()
    assert isinstance(me, WhoamiResponse), me
    assert me.user_id == user_id
    assert me.device_id == logged_in.device_id

    devices = await client.devices()
    assert isinstance(devices, DevicesResponse), devices
    by_id = {d.id: d for d in devices.devices}
    assert set(by_id) == {registered.device_id, logged_in.device_id}
    assert by_id[logged_in.device_id].display_name == "nio laptop"
    assert by_id[registered.device_id].display_name == "nio signup"

    renamed = await client.update_device(logged_in.device_id, {"display_name": "renamed"})
    assert isinstance(renamed, UpdateDeviceResponse), renamed
    devices = await client.devices()
    assert isinstance(devices, DevicesResponse)
    assert {d.id: d.display_name for d in devices.devices}[logged_in.device_id] == "renamed"

    # deleting the sign-up device: first the auth challenge, then with the password
    challenge = await client.delete_devices([registered.device_id])
    assert isinstance(challenge, DeleteDevicesAuthResponse), challenge
    assert challenge.session
    auth = {"type": "m.login.password", "user": user_id, "password": PASSWORD,
            "session": challenge.session}
    deleted = await client.delete_devices([registered.device_id], auth)
    assert isinstance(deleted, DeleteDevicesResponse), deleted
    gone = await registrar.whoami()
    assert isinstance(gone, WhoamiError)
    assert gone.status_code == "M_UNKNOWN_TOKEN"

    logged_out = await client.logout()
    assert isinstance(logged_out, LogoutResponse), logged_out
    assert not client.logged_in
    client.access_token = logged_in.access_token
    after = await client.whoami()
    assert isinstance(after, WhoamiError)
    assert after.status_code == "M_UNKNOWN_TOKEN"


async def test_logout_all_devices(server: ServerProcess,
                                  client_factory: list[AsyncClient]) -> None:
    name = fresh()
    server.register(name, PASSWORD)
    first = new_client(server, client_factory, user=name)
    second = new_client(server, client_factory, user=name)
    assert isinstance(await first.login(PASSWORD), LoginResponse)
    assert isinstance(await second.login(PASSWORD), LoginResponse)
    assert first.device_id != second.device_id
    assert isinstance(await first.logout(all_devices=True), LogoutResponse)
    answer = await second.whoami()
    assert isinstance(answer, WhoamiError) and answer.status_code == "M_UNKNOWN_TOKEN"


async def test_wrong_password(server: ServerProcess, client_factory: list[AsyncClient]) -> None:
    name = fresh()
    server.register(name, PASSWORD)
    client = new_client(server, client_factory, user=f"@{name}:{server.server_name}")
    answer = await client.login("not it")
    assert isinstance(answer, LoginError)
    assert answer.status_code == "M_FORBIDDEN"
    assert not client.logged_in


async def test_register_taken_name(server: ServerProcess,
                                   client_factory: list[AsyncClient]) -> None:
    name = fresh()
    server.register(name, PASSWORD)
    client = new_client(server, client_factory)
    answer = await client.register(name, "other")
    assert not isinstance(answer, RegisterResponse)
    assert answer.status_code == "M_USER_IN_USE"
