"""Myelin with Myelin: every judged federation scenario, in both directions.

The pair (two monoliths on SQLite, each behind nginx with TLS) is started
once for the module; ``sides`` runs every scenario with each server as the
room's host. The scenarios themselves are in :mod:`tests.federation.scenarios`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.federation import scenarios as sc
from tests.support.federation import MyelinPeer


@pytest.fixture(scope="module", params=["hs1-hosts", "hs2-hosts"])
def sides(request: pytest.FixtureRequest,
          myelin_pair: tuple[MyelinPeer, MyelinPeer]) -> tuple[MyelinPeer, MyelinPeer]:
    first, second = myelin_pair
    return (first, second) if request.param == "hs1-hosts" else (second, first)


@pytest.fixture(scope="module")
def room(sides: tuple[Any, Any]) -> sc.Shared:
    return sc.shared_room(*sides)


def test_invite_then_join(sides: tuple[Any, Any]) -> None:
    sc.invite_then_join(*sides)


def test_messages_both_ways_in_order_exactly_once(room: sc.Shared) -> None:
    sc.messages_both_ways(room)


def test_typing_crosses(room: sc.Shared) -> None:
    sc.typing_crosses(room)


def test_receipts_cross(room: sc.Shared) -> None:
    sc.receipts_cross(room)


def test_presence_crosses(room: sc.Shared) -> None:
    sc.presence_crosses(room)


def test_state_crosses(room: sc.Shared) -> None:
    sc.state_crosses(room)


def test_profiles_cross(room: sc.Shared) -> None:
    sc.profiles_cross(room)


def test_aliases_resolve_and_join(sides: tuple[Any, Any]) -> None:
    sc.aliases_resolve(*sides)


def test_new_member_paginates_history(sides: tuple[Any, Any]) -> None:
    sc.new_member_paginates_history(*sides)


def test_e2ee_conversation_with_nio(sides: tuple[Any, Any]) -> None:
    sc.e2ee_conversation(*sides)


def test_leave_ban_rejoin(sides: tuple[Any, Any]) -> None:
    sc.leave_ban_rejoin(*sides)


@pytest.mark.parametrize("down", ["far", "host"])
def test_down_then_catch_up(sides: tuple[Any, Any], down: str) -> None:
    sc.down_then_catch_up(*sides, down)


def test_forged_requests_refused_and_stored_nowhere(sides: tuple[Any, Any]) -> None:
    sc.forged_requests_refused(*sides)
