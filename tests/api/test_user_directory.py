"""POST /user_directory/search over raw HTTP: who finds whom, under which
name, and the directory catching up after a restart."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.api.rooms_support import Api, User, q
from tests.support.postgres import free_port
from tests.support.redis import start_redis
from tests.support.server import ServerProcess, launch_server

_ids = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="module")
def api(hs: ServerProcess) -> Api:
    return Api(hs)


def directory(user: User, term: str, **body: Any) -> dict[str, Any]:
    return dict(user.ok("POST", "/user_directory/search", {"search_term": term, **body}))


def found(user: User, term: str) -> set[str]:
    return {r["user_id"] for r in directory(user, term)["results"]}


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """The directory's room lists follow the events stream: wait for them."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the directory did not catch up"
        time.sleep(0.1)


def named(api: Api, prefix: str, display_name: str) -> User:
    user = api.user(fresh(prefix))
    user.ok("PUT", f"/profile/{q(user.user_id)}/displayname", {"displayname": display_name})
    return user


def test_found_once_sharing_a_room_and_not_after_leaving(api: Api) -> None:
    word = fresh("Zebulon")
    bob = named(api, "bob", f"{word} Quux")
    alice = api.user(fresh("alice"))
    assert found(alice, word) == set()
    room = alice.create_room(preset="private_chat")
    alice.invite(room, bob.user_id)
    assert found(alice, word) == set()  # invited is not sharing
    bob.join(room)
    [result] = directory(alice, word)["results"]
    assert result == {"user_id": bob.user_id, "display_name": f"{word} Quux"}
    # Word prefixes of the display name and the localpart, any case.
    assert found(alice, f"{word[:4].lower()} QU") == {bob.user_id}
    assert found(alice, bob.user_id[1:4]) >= {bob.user_id}
    assert found(alice, f"{word} nomatch") == set()
    bob.leave(room)
    assert found(alice, word) == set()


def test_public_room_members_are_found_by_anyone(api: Api) -> None:
    word = fresh("Publius")
    carol = named(api, "carol", f"{word} Member")
    dave = api.user(fresh("dave"))
    stranger = api.user(fresh("stranger"))
    room = dave.create_room(preset="public_chat")
    carol.join(room)
    eventually(lambda: found(stranger, word) == {carol.user_id})
    # Leaving the public room (and sharing no other) hides her again.
    carol.leave(room)
    eventually(lambda: found(stranger, word) == set())
    # A room made public lists its members; made private, no longer.
    carol.join(room)
    eventually(lambda: found(stranger, word) == {carol.user_id})
    dave.put_state(room, "m.room.join_rules", {"join_rule": "invite"})
    eventually(lambda: found(stranger, word) == set())
    dave.put_state(room, "m.room.join_rules", {"join_rule": "public"})
    eventually(lambda: found(stranger, word) == {carol.user_id})


def test_world_readable_rooms_count_as_public_and_nobody_shares_with_themselves(
        api: Api) -> None:
    word = fresh("Reader")
    hana = named(api, "hana", f"{word} Hana")
    host = api.user(fresh("host"))
    stranger = api.user(fresh("stranger"))
    room = host.create_room(preset="private_chat")
    host.invite(room, hana.user_id)
    hana.join(room)
    # In a private room only: not even she finds herself.
    assert found(hana, word) == set()
    assert found(stranger, word) == set()
    host.put_state(room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    eventually(lambda: found(stranger, word) == {hana.user_id})
    # Public rooms list everyone, herself included.
    assert found(hana, word) == {hana.user_id}
    host.put_state(room, "m.room.history_visibility", {"history_visibility": "shared"})
    eventually(lambda: found(stranger, word) == set())


def test_found_under_a_new_name_after_a_profile_change(api: Api) -> None:
    old, new = fresh("Oldname"), fresh("Newname")
    erin = named(api, "erin", f"{old} Erin")
    frank = api.user(fresh("frank"))
    room = frank.create_room(preset="private_chat")
    frank.invite(room, erin.user_id)
    erin.join(room)
    assert found(frank, old) == {erin.user_id}
    erin.ok("PUT", f"/profile/{q(erin.user_id)}/displayname", {"displayname": f"{new} Erin"})
    erin.ok("PUT", f"/profile/{q(erin.user_id)}/avatar_url",
            {"avatar_url": "mxc://test.localhost/erinAvatar"})
    assert found(frank, old) == set()
    [result] = directory(frank, new)["results"]
    assert result == {"user_id": erin.user_id, "display_name": f"{new} Erin",
                      "avatar_url": "mxc://test.localhost/erinAvatar"}


def test_limit_and_limited(api: Api) -> None:
    word = fresh("Many")
    host = api.user(fresh("host"))
    room = host.create_room(preset="public_chat")
    members = [named(api, "many", f"{word} {i}") for i in range(4)]
    for member in members:
        member.join(room)
    eventually(lambda: len(found(host, word)) == 4)
    page = directory(host, word, limit=3)
    assert len(page["results"]) == 3 and page["limited"] is True
    page = directory(host, word, limit=4)
    assert len(page["results"]) == 4 and page["limited"] is False
    assert directory(host, word)["limited"] is False  # default limit 10


def test_deactivated_users_are_not_listed(api: Api) -> None:
    word = fresh("Gone")
    name = fresh("gone")
    login = api.server.register(name)
    gone = User(api, login["user_id"], login["access_token"])
    gone.ok("PUT", f"/profile/{q(gone.user_id)}/displayname", {"displayname": f"{word} Soon"})
    host = api.user(fresh("host"))
    room = host.create_room(preset="public_chat")
    gone.join(room)
    eventually(lambda: found(host, word) == {gone.user_id})
    _, body = gone.req("POST", "/account/deactivate", {})
    session = body["session"]
    gone.ok("POST", "/account/deactivate", {"auth": {
        "type": "m.login.password", "password": "correct horse", "session": session,
        "identifier": {"type": "m.id.user", "user": name}}})
    eventually(lambda: found(host, word) == set())


@pytest.mark.parametrize("term", ['"', "*", "AND", "OR", "-", "NEAR(", "a:b", "'", "", "  "])
def test_search_syntax_in_the_term_is_not_an_error(api: Api, term: str) -> None:
    alice = api.user(fresh("alice"))
    assert isinstance(directory(alice, term)["results"], list)


@pytest.mark.parametrize(("body", "errcode"), [
    ({}, "M_BAD_JSON"),
    ({"search_term": 3}, "M_BAD_JSON"),
    ({"search_term": "x", "limit": "5"}, "M_BAD_JSON"),
    ({"search_term": "x", "limit": -1}, "M_INVALID_PARAM"),
])
def test_bad_bodies(api: Api, body: dict[str, Any], errcode: str) -> None:
    alice = api.user(fresh("alice"))
    alice.err("POST", "/user_directory/search", body, status=400, errcode=errcode)


# -- configuration and restarts (a server each) ------------------------------------------

@pytest.fixture
def own_server(engine: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Api]]:
    servers: list[ServerProcess] = []

    def start(**extra: Any) -> Api:
        pg = request.getfixturevalue("postgres_server") if engine == "postgres" else None
        server = launch_server(engine, pg, extra)
        servers.append(server)
        return Api(server)

    yield start
    for server in servers:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def test_search_all_users_and_disabled(own_server: Callable[..., Api]) -> None:
    api = own_server(user_directory={"search_all_users": True})
    word = fresh("Loner")
    loner = named(api, "loner", f"{word} Alone")
    other = api.user(fresh("other"))
    # Sharing no room, in no public room: found all the same.
    assert found(other, word) == {loner.user_id}
    assert found(other, loner.user_id[1:]) == {loner.user_id}

    api = own_server(user_directory={"enabled": False})
    loner = named(api, "loner", f"{word} Alone")
    other = api.user(fresh("other"))
    room = other.create_room(preset="public_chat")
    loner.join(room)
    assert directory(other, word) == {"limited": False, "results": []}


def _set_config(server: ServerProcess, **changes: Any) -> None:
    with open(server.config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    with open(server.config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)


def _pile_up_changes(api: Api, gina: User, host: User, early: str, room: str, stranger: User,
                     word: str) -> None:
    gina.leave(early)
    gina.join(room)
    host.put_state(room, "m.room.join_rules", {"join_rule": "invite"})
    time.sleep(0.5)
    assert found(stranger, word) == {gina.user_id}  # nobody applied the changes yet


def test_catches_up_after_a_restart(own_server: Callable[..., Api], engine: str) -> None:
    if engine != "postgres":
        pytest.skip("naming another instance for the directory makes a fleet: PostgreSQL only")
    api = own_server()
    server = api.server
    word = fresh("Later")
    gina = named(api, "gina", f"{word} Gina")
    host = api.user(fresh("host"))
    stranger = api.user(fresh("stranger"))
    room = host.create_room(preset="public_chat")
    early = host.create_room(preset="public_chat")
    gina.join(early)
    eventually(lambda: found(stranger, word) == {gina.user_id})
    # Another instance maintains the directory (and is not running): changes pile up.
    redis = start_redis()
    with open(server.config_path, encoding="utf-8") as f:
        listeners = yaml.safe_load(f)["listeners"]
    replication = free_port()
    try:
        _set_config(server, update_user_directory_from_worker="directory_worker",
                    redis={"enabled": True, "host": "127.0.0.1", "port": redis.port},
                    listeners=[*listeners, {"port": replication, "type": "http",
                                            "bind_addresses": ["127.0.0.1"],
                                            "resources": [{"names": ["replication"]}]}],
                    instance_map={"main": {"host": "127.0.0.1", "port": replication},
                                  "directory_worker": {"host": "127.0.0.1", "port": 2}})
        server.restart()
        _pile_up_changes(api, gina, host, early, room, stranger, word)
    finally:
        redis.stop()
    # Back to the main process maintaining it: it goes on from where it stopped.
    _set_config(server, update_user_directory_from_worker=None, instance_map=None, redis=None,
                listeners=listeners)
    server.restart()
    eventually(lambda: found(stranger, word) == set())
    host.put_state(room, "m.room.join_rules", {"join_rule": "public"})
    eventually(lambda: found(stranger, word) == {gina.user_id})
