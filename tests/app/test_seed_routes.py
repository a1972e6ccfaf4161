"""Every client-API path pattern the seed routes to workers is answered here,
under each of the versions it lists (api/v1, r0, v3).

The seed's patterns (../shared/seed/workers.md, "generic_worker") are what a
reverse proxy sends to a Myelin process; a pattern we serve must match our
routes for every version it names, or a proxied client gets M_UNRECOGNIZED.
"""

from __future__ import annotations

import re

import pytest

from myelin.app.servlets import routes_for_resources
from myelin.http.routing import Router

ROUTER = Router(routes_for_resources(["client", "federation", "keys"]))
ROOM = "!room:example.org"
EVENT = "$event"
USER = "@alice:example.org"

# (seed pattern, method, sample path with {v} for the version). Patterns for
# features Myelin does not have yet (federation, SSO, search, notifications,
# user directory) are not here.
SEED_SAMPLES = [
    (r"^/_matrix/client/(r0|v3)/sync$", "GET", "/sync"),
    (r"^/_matrix/client/(api/v1|r0|v3)/events$", "GET", "/events"),
    (r"^/_matrix/client/(api/v1|r0|v3)/initialSync$", "GET", "/initialSync"),
    (r"^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$", "GET",
     f"/rooms/{ROOM}/initialSync"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/createRoom$", "POST", "/createRoom"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/publicRooms$", "GET", "/publicRooms"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/joined_members$", "GET",
     f"/rooms/{ROOM}/joined_members"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/context/.*$", "GET",
     f"/rooms/{ROOM}/context/{EVENT}"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/members$", "GET",
     f"/rooms/{ROOM}/members"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state$", "GET", f"/rooms/{ROOM}/state"),
    (r"^/_matrix/client/(r0|v3|unstable)/account/3pid$", "GET", "/account/3pid"),
    (r"^/_matrix/client/(r0|v3|unstable)/account/whoami$", "GET", "/account/whoami"),
    (r"^/_matrix/client/(r0|v3|unstable)/devices$", "GET", "/devices"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/event/", "GET",
     f"/rooms/{ROOM}/event/{EVENT}"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/joined_rooms$", "GET", "/joined_rooms"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases", "GET",
     f"/rooms/{ROOM}/aliases"),
    (r"^/_matrix/client/(r0|v3|unstable)/user/.*/filter(/|$)", "POST", f"/user/{USER}/filter"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/directory/room/.*$", "GET",
     "/directory/room/%23alias:example.org"),
    (r"^/_matrix/client/(r0|v3|unstable)/capabilities$", "GET", "/capabilities"),
    (r"^/_matrix/client/(r0|v3|unstable)/keys/query$", "POST", "/keys/query"),
    (r"^/_matrix/client/(r0|v3|unstable)/keys/changes$", "GET", "/keys/changes"),
    (r"^/_matrix/client/(r0|v3|unstable)/keys/claim$", "POST", "/keys/claim"),
    (r"^/_matrix/client/(r0|v3|unstable)/keys/upload/", "POST", "/keys/upload/DEVICE"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/login$", "POST", "/login"),
    (r"^/_matrix/client/(r0|v3|unstable)/register$", "POST", "/register"),
    (r"^/_matrix/client/(r0|v3|unstable)/register/available$", "GET", "/register/available"),
    (r"^/_matrix/client/(r0|v3|unstable)/password_policy$", "GET", "/password_policy"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/login/sso/redirect", "GET",
     "/login/sso/redirect"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/login/sso/redirect", "GET",
     "/login/sso/redirect/idp1"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/redact", "PUT",
     f"/rooms/{ROOM}/redact/{EVENT}/txn1"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/send", "PUT",
     f"/rooms/{ROOM}/send/m.room.message/txn1"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state/", "PUT",
     f"/rooms/{ROOM}/state/m.room.name/"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(join|invite|leave|ban|unban|kick)$",
     "POST", f"/rooms/{ROOM}/join"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(join|invite|leave|ban|unban|kick)$",
     "POST", f"/rooms/{ROOM}/kick"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/join/", "POST", f"/join/{ROOM}"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/knock/", "POST", f"/knock/{ROOM}"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/profile/", "GET", f"/profile/{USER}"),
    (r"^/_matrix/client/(r0|v3|unstable)/.*/tags", "GET", f"/user/{USER}/rooms/{ROOM}/tags"),
    (r"^/_matrix/client/(r0|v3|unstable)/.*/account_data", "PUT",
     f"/user/{USER}/account_data/m.example"),
    (r"^/_matrix/client/(r0|v3|unstable)/rooms/.*/receipt", "POST",
     f"/rooms/{ROOM}/receipt/m.read/{EVENT}"),
    (r"^/_matrix/client/(r0|v3|unstable)/rooms/.*/read_markers", "POST",
     f"/rooms/{ROOM}/read_markers"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/presence/", "GET",
     f"/presence/{USER}/status"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/pushrules/", "GET", "/pushrules/"),
    (r"^/_matrix/client/(r0|v3|unstable)/notifications$", "GET", "/notifications"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/messages$", "GET",
     f"/rooms/{ROOM}/messages"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/voip/turnServer$", "GET", "/voip/turnServer"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "GET", "/room_keys/version"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "POST", "/room_keys/version"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "PUT", "/room_keys/version/1"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "DELETE", "/room_keys/version/1"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "PUT", "/room_keys/keys"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "GET", f"/room_keys/keys/{ROOM}"),
    (r"^/_matrix/client/(r0|v3|unstable)/room_keys/", "DELETE",
     f"/room_keys/keys/{ROOM}/session"),
    (r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/", "GET",
     f"/rooms/{ROOM}/relations/{EVENT}"),
    (r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/", "GET",
     f"/rooms/{ROOM}/relations/{EVENT}/m.thread"),
    (r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/", "GET",
     f"/rooms/{ROOM}/relations/{EVENT}/m.annotation/m.reaction"),
    (r"^/_matrix/client/(api/v1|r0|v3|unstable)/search$", "POST", "/search"),
    (r"^/_matrix/client/(r0|v3|unstable)/user_directory/search$", "POST",
     "/user_directory/search"),
]

# Seed patterns with one fixed path (no version group): (pattern, method, path).
SEED_FIXED_SAMPLES = [
    (r"^/_matrix/client/v1/rooms/.*/hierarchy$", "GET",
     f"/_matrix/client/v1/rooms/{ROOM}/hierarchy"),
    (r"^/_matrix/client/v1/rooms/.*/threads$", "GET",
     f"/_matrix/client/v1/rooms/{ROOM}/threads"),
    (r"^/_matrix/client/unstable/im.nheko.summary/rooms/.*/summary$", "GET",
     f"/_matrix/client/unstable/im.nheko.summary/rooms/{ROOM}/summary"),
    (r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/", "GET",
     f"/_matrix/client/unstable/rooms/{ROOM}/relations/{EVENT}"),
    (r"^/_matrix/key/v2/query", "POST", "/_matrix/key/v2/query"),
    (r"^/_matrix/key/v2/query", "GET", "/_matrix/key/v2/query/example.org"),
    # fed-dag: the room DAG over federation.
    (r"^/_matrix/federation/v1/event/", "GET", f"/_matrix/federation/v1/event/{EVENT}"),
    (r"^/_matrix/federation/v1/state/", "GET", f"/_matrix/federation/v1/state/{ROOM}"),
    (r"^/_matrix/federation/v1/state_ids/", "GET", f"/_matrix/federation/v1/state_ids/{ROOM}"),
    (r"^/_matrix/federation/v1/backfill/", "GET", f"/_matrix/federation/v1/backfill/{ROOM}"),
    (r"^/_matrix/federation/v1/get_missing_events/", "POST",
     f"/_matrix/federation/v1/get_missing_events/{ROOM}"),
    (r"^/_matrix/federation/v1/event_auth/", "GET",
     f"/_matrix/federation/v1/event_auth/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/v1/timestamp_to_event/", "GET",
     f"/_matrix/federation/v1/timestamp_to_event/{ROOM}"),
    (r"^/_matrix/federation/v1/send/", "PUT", "/_matrix/federation/v1/send/txn1"),
    # Federation queries (fed-queries).
    (r"^/_matrix/federation/v1/publicRooms", "GET", "/_matrix/federation/v1/publicRooms"),
    (r"^/_matrix/federation/v1/publicRooms", "POST", "/_matrix/federation/v1/publicRooms"),
    (r"^/_matrix/federation/v1/query/", "GET", "/_matrix/federation/v1/query/profile"),
    (r"^/_matrix/federation/v1/query/", "GET", "/_matrix/federation/v1/query/directory"),
    (r"^/_matrix/federation/v1/query/", "GET", "/_matrix/federation/v1/query/someType"),
    (r"^/_matrix/federation/v1/user/devices/", "GET",
     f"/_matrix/federation/v1/user/devices/{USER}"),
    (r"^/_matrix/federation/v1/hierarchy/", "GET", f"/_matrix/federation/v1/hierarchy/{ROOM}"),
    # Federation membership handshakes.
    (r"^/_matrix/federation/v1/make_join/", "GET",
     f"/_matrix/federation/v1/make_join/{ROOM}/{USER}"),
    (r"^/_matrix/federation/v1/make_leave/", "GET",
     f"/_matrix/federation/v1/make_leave/{ROOM}/{USER}"),
    (r"^/_matrix/federation/(v1|v2)/send_join/", "PUT",
     f"/_matrix/federation/v1/send_join/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/(v1|v2)/send_join/", "PUT",
     f"/_matrix/federation/v2/send_join/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/(v1|v2)/send_leave/", "PUT",
     f"/_matrix/federation/v1/send_leave/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/(v1|v2)/send_leave/", "PUT",
     f"/_matrix/federation/v2/send_leave/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/(v1|v2)/invite/", "PUT",
     f"/_matrix/federation/v1/invite/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/(v1|v2)/invite/", "PUT",
     f"/_matrix/federation/v2/invite/{ROOM}/{EVENT}"),
    (r"^/_matrix/federation/v1/exchange_third_party_invite/", "PUT",
     f"/_matrix/federation/v1/exchange_third_party_invite/{ROOM}"),
]


def _versions(pattern: str) -> list[str]:
    group = re.search(r"/_matrix/client/\(([^)]*)\)", pattern)
    assert group, pattern
    return [v for v in group.group(1).split("|") if not v.startswith("unstable")]


CASES = [(pattern, method, f"/_matrix/client/{version}{sample}")
         for pattern, method, sample in SEED_SAMPLES for version in _versions(pattern)]
CASES += SEED_FIXED_SAMPLES


@pytest.mark.parametrize(("pattern", "method", "path"), CASES,
                         ids=[f"{m} {p}" for _, m, p in CASES])
def test_seed_pattern_is_served(pattern: str, method: str, path: str) -> None:
    assert re.match(pattern, path), "the sample must be one the seed routes here"
    route, _, _ = ROUTER.match(method, path.replace("!", "%21").replace("$", "%24")
                               .replace("@", "%40"))
    assert route is not None, f"{method} {path} is not served"


def test_unversioned_endpoints() -> None:
    assert ROUTER.match("GET", "/_matrix/client/versions")[0] is not None
    assert ROUTER.match("GET", "/_matrix/client/v1/register/m.login.registration_token/"
                               "validity")[0] is not None
    assert ROUTER.match("POST", "/_matrix/client/v3/refresh")[0] is not None
    assert ROUTER.match("GET", "/_matrix/client/v1/admin/lock/%40a:x")[0] is not None
    assert ROUTER.match("GET", "/_matrix/client/v3/admin/whois/%40a:x")[0] is not None
    assert ROUTER.match("GET", "/_matrix/client/v1/rooms/%21r:x/timestamp_to_event")[0]


# The seed's synapse.app.media_repository patterns: everything under
# /_matrix/media/ and the media admin APIs, served by a worker listener with
# the `media` resource (and by main's client listener unless enable_media_repo
# is false).
MEDIA_SEED_SAMPLES = [
    (r"^/_matrix/media/", "POST", "/_matrix/media/v3/upload"),
    (r"^/_matrix/media/", "POST", "/_matrix/media/v1/create"),
    (r"^/_matrix/media/", "PUT", "/_matrix/media/v3/upload/example.org/abcdef"),
    (r"^/_matrix/media/", "GET", "/_matrix/media/v3/download/example.org/abcdef"),
    (r"^/_matrix/media/", "GET", "/_matrix/media/r0/download/example.org/abcdef/name.png"),
    (r"^/_matrix/media/", "GET", "/_matrix/media/v3/thumbnail/example.org/abcdef"),
    (r"^/_matrix/media/", "GET", "/_matrix/media/v3/config"),
    (r"^/_matrix/media/", "GET", "/_matrix/media/v3/preview_url"),
    (r"^/_synapse/admin/v1/purge_media_cache$", "POST", "/_synapse/admin/v1/purge_media_cache"),
    (r"^/_synapse/admin/v1/room/.*/media.*$", "GET", f"/_synapse/admin/v1/room/{ROOM}/media"),
    (r"^/_synapse/admin/v1/room/.*/media.*$", "POST",
     f"/_synapse/admin/v1/room/{ROOM}/media/quarantine"),
    (r"^/_synapse/admin/v1/user/.*/media.*$", "POST",
     f"/_synapse/admin/v1/user/{USER}/media/quarantine"),
    (r"^/_synapse/admin/v1/users/.*/media$", "GET", f"/_synapse/admin/v1/users/{USER}/media"),
    (r"^/_synapse/admin/v1/users/.*/media$", "DELETE", f"/_synapse/admin/v1/users/{USER}/media"),
    (r"^/_synapse/admin/v1/media/.*$", "GET", "/_synapse/admin/v1/media/example.org/abcdef"),
    (r"^/_synapse/admin/v1/media/.*$", "DELETE", "/_synapse/admin/v1/media/example.org/abcdef"),
    (r"^/_synapse/admin/v1/media/.*$", "POST", "/_synapse/admin/v1/media/delete"),
    (r"^/_synapse/admin/v1/media/.*$", "POST",
     "/_synapse/admin/v1/media/quarantine/example.org/abcdef"),
    (r"^/_synapse/admin/v1/media/.*$", "POST",
     "/_synapse/admin/v1/media/unquarantine/example.org/abcdef"),
    (r"^/_synapse/admin/v1/media/.*$", "POST", "/_synapse/admin/v1/media/protect/abcdef"),
    (r"^/_synapse/admin/v1/media/.*$", "POST", "/_synapse/admin/v1/media/unprotect/abcdef"),
    (r"^/_synapse/admin/v1/quarantine_media/.*$", "POST",
     f"/_synapse/admin/v1/quarantine_media/{ROOM}"),
]
# The authenticated media endpoints (Matrix 1.11) are the media resource too.
AUTHENTICATED_MEDIA = [
    ("GET", "/_matrix/client/v1/media/download/example.org/abcdef"),
    ("GET", "/_matrix/client/v1/media/download/example.org/abcdef/name.png"),
    ("GET", "/_matrix/client/v1/media/thumbnail/example.org/abcdef"),
    ("GET", "/_matrix/client/v1/media/config"),
    ("GET", "/_matrix/client/v1/media/preview_url"),
    # ... and so are the federation media endpoints, where the media store is.
    ("GET", "/_matrix/federation/v1/media/download/abcdef"),
    ("GET", "/_matrix/federation/v1/media/thumbnail/abcdef"),
]


def _quoted(path: str) -> str:
    return path.replace("!", "%21").replace("$", "%24").replace("@", "%40")


@pytest.mark.parametrize(("pattern", "method", "path"), MEDIA_SEED_SAMPLES,
                         ids=[f"{m} {p}" for _, m, p in MEDIA_SEED_SAMPLES])
def test_media_worker_serves_the_seed_media_patterns(pattern: str, method: str,
                                                     path: str) -> None:
    assert re.match(pattern, path), "the sample must be one the seed routes here"
    worker = Router(routes_for_resources(["media"], main=False))
    route, _, _ = worker.match(method, _quoted(path))
    assert route is not None and route.resource == "media", f"{method} {path} is not served"


def test_where_media_is_served() -> None:
    paths = [(m, p) for _, m, p in MEDIA_SEED_SAMPLES] + AUTHENTICATED_MEDIA
    main_client = Router(routes_for_resources(["client"], media_serving="client"))
    main_without_media = Router(routes_for_resources(["client", "media"], media_serving="none"))
    worker_client = Router(routes_for_resources(["client"], main=False))
    worker_media = Router(routes_for_resources(["media"], main=False))
    for method, path in paths:
        path = _quoted(path)
        assert main_client.match(method, path)[0] is not None, path
        assert worker_media.match(method, path)[0] is not None, path
        # enable_media_repo: false on main, and a worker's client listener: no media.
        assert main_without_media.match(method, path)[0] is None, path
        assert worker_client.match(method, path)[0] is None, path
    # The media listener serves nothing else.
    assert worker_media.match("GET", "/_matrix/client/v3/sync")[0] is None
