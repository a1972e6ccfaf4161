"""Push rules: ``/pushrules/`` — read the ruleset, add, change and remove rules."""

from __future__ import annotations

from typing import Any

from myelin.domain import MatrixError, bad_json
from myelin.handlers.push_rules import check_scope_kind
from myelin.http.request import Request
from myelin.http.routing import LEGACY, RouteTable, client_path

routes = RouteTable("client")


@routes.get(client_path("/pushrules/", LEGACY))
async def get_all(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    return {"global": await request.hs.push_rules.get_ruleset(requester.user_id)}


@routes.get(client_path("/pushrules/{scope}/", LEGACY))
async def get_scope(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    if request.param("scope") != "global":
        raise MatrixError(400, "M_UNRECOGNIZED", "Unknown push rule scope")
    return await request.hs.push_rules.get_ruleset(requester.user_id)


@routes.get(client_path("/pushrules/{scope}/{kind}/", LEGACY))
async def get_kind(request: Request) -> list[dict[str, Any]]:
    requester = await request.requester()
    kind = request.param("kind")
    check_scope_kind(request.param("scope"), kind)
    ruleset = await request.hs.push_rules.get_ruleset(requester.user_id)
    return ruleset[kind]


def _target(request: Request) -> tuple[str, str]:
    kind = request.param("kind")
    check_scope_kind(request.param("scope"), kind)
    return kind, request.param("ruleId")


@routes.get(client_path("/pushrules/{scope}/{kind}/{ruleId}", LEGACY))
async def get_rule(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    return await request.hs.push_rules.get_rule(requester.user_id, kind, rule_id)


@routes.put(client_path("/pushrules/{scope}/{kind}/{ruleId}", LEGACY), stream="push_rules")
async def put_rule(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    body = await request.json()
    await request.hs.push_rules.put_rule(requester.user_id, kind, rule_id, body,
                                         request.query_str("before"),
                                         request.query_str("after"))
    return {}


@routes.delete(client_path("/pushrules/{scope}/{kind}/{ruleId}", LEGACY),
                stream="push_rules")
async def delete_rule(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    await request.hs.push_rules.delete_rule(requester.user_id, kind, rule_id)
    return {}


@routes.get(client_path("/pushrules/{scope}/{kind}/{ruleId}/enabled", LEGACY))
async def get_enabled(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    rule = await request.hs.push_rules.get_rule(requester.user_id, kind, rule_id)
    return {"enabled": rule["enabled"]}


@routes.put(client_path("/pushrules/{scope}/{kind}/{ruleId}/enabled", LEGACY),
            stream="push_rules")
async def put_enabled(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    body = await request.json()
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise bad_json("enabled must be true or false")
    await request.hs.push_rules.set_enabled(requester.user_id, kind, rule_id, enabled)
    return {}


@routes.get(client_path("/pushrules/{scope}/{kind}/{ruleId}/actions", LEGACY))
async def get_actions(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    rule = await request.hs.push_rules.get_rule(requester.user_id, kind, rule_id)
    return {"actions": rule["actions"]}


@routes.put(client_path("/pushrules/{scope}/{kind}/{ruleId}/actions", LEGACY),
            stream="push_rules")
async def put_actions(request: Request) -> dict[str, Any]:
    requester = await request.requester()
    kind, rule_id = _target(request)
    body = await request.json()
    if "actions" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing actions")
    await request.hs.push_rules.set_actions(requester.user_id, kind, rule_id, body["actions"])
    return {}


# Paths that name no rule (no scope, kind or rule id; a scope or kind without
# its trailing slash; an unknown attribute) are bad requests, not unknown
# endpoints, as clients of Synapse's catch-all push rules servlet expect.
_INCOMPLETE = (client_path("/pushrules/", LEGACY), client_path("/pushrules/{scope}", LEGACY),
               client_path("/pushrules/{scope}/", LEGACY),
               client_path("/pushrules/{scope}/{kind}", LEGACY),
               client_path("/pushrules/{scope}/{kind}/", LEGACY))


@routes.put(*_INCOMPLETE)
@routes.delete(*_INCOMPLETE)
async def incomplete_rule_path(request: Request) -> dict[str, Any]:
    await request.requester()
    raise MatrixError(400, "M_UNRECOGNIZED", "A push rule path needs a scope, kind and rule id")


@routes.get(client_path("/pushrules/{scope}", LEGACY),
            client_path("/pushrules/{scope}/{kind}", LEGACY))
async def get_without_slash(request: Request) -> dict[str, Any]:
    await request.requester(allow_guest=True)
    raise MatrixError(400, "M_UNRECOGNIZED", "Push rule scopes and kinds end with a slash")


@routes.get(client_path("/pushrules/{scope}/{kind}/{ruleId}/{attr}", LEGACY))
@routes.put(client_path("/pushrules/{scope}/{kind}/{ruleId}/{attr}", LEGACY))
async def unknown_attribute(request: Request) -> dict[str, Any]:
    await request.requester(allow_guest=True)
    raise MatrixError(400, "M_UNRECOGNIZED",
                      f"Unknown push rule attribute {request.param('attr')!r}")
