"""The server starts on both engines and answers a registered user's whoami."""

from tests.support.server import ServerProcess


def test_register_and_whoami(server: ServerProcess) -> None:
    login = server.register("alice")
    status, body = server.request("GET", "/_matrix/client/v3/account/whoami",
                                  token=login["access_token"])
    assert status == 200
    assert body["user_id"] == "@alice:test.localhost"
    assert body["device_id"] == login["device_id"]
