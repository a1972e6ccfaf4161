"""Where a fleet serves the media repository: main's client listener by
default, the media workers when the shared config says `enable_media_repo:
false` (the seed's media_repository layout)."""

from __future__ import annotations

from typing import Any

from myelin.app.roles import ProcessRoles
from myelin.app.routing_plan import ProcessInfo, plan_routes
from myelin.config import load_config_from_dict

SHARED: dict[str, Any] = {
    "server_name": "example.org",
    "listeners": [{"port": 8008, "resources": [{"names": ["client", "federation"]}]},
                  {"port": 9093, "resources": [{"names": ["replication"]}]}],
    "instance_map": {"main": {"host": "localhost", "port": 9093}},
}
MEDIA_WORKER = {"worker_app": "synapse.app.media_repository", "worker_name": "media1",
                "worker_listeners": [{"port": 8085, "resources": [{"names": ["media"]}]}]}
GENERIC = {"worker_app": "synapse.app.generic_worker", "worker_name": "generic1",
           "worker_listeners": [{"port": 8083, "resources": [{"names": ["client"]}]}]}


def _info(config: dict[str, Any]) -> ProcessInfo:
    loaded = load_config_from_dict(config)
    return ProcessInfo(loaded.instance_name, loaded.worker_app, tuple(loaded.listeners),
                       ProcessRoles.from_config(loaded))


def _media_targets(shared: dict[str, Any]) -> set[tuple[str, ...]]:
    processes = [_info(shared), _info({**shared, **MEDIA_WORKER}), _info({**shared, **GENERIC})]
    plan = plan_routes(processes)
    return {d.target.processes for d in plan.decisions
            if d.route.resource == "media" and d.target is not None}


def test_main_serves_media_on_its_client_listener_by_default() -> None:
    roles = ProcessRoles.from_config(load_config_from_dict(SHARED))
    assert roles.media_serving == "client" and roles.runs("media")
    # The media worker serves it too; a generic worker's client listener does not.
    processes = [_info(SHARED), _info({**SHARED, **MEDIA_WORKER}), _info({**SHARED, **GENERIC})]
    plan = plan_routes(processes)
    media = [d for d in plan.decisions if d.route.resource == "media"]
    assert media and all(set(d.served_by) == {"master", "media1"} for d in media)


def test_enable_media_repo_false_leaves_media_to_the_media_workers() -> None:
    shared = {**SHARED, "enable_media_repo": False,
              "media_instance_running_background_jobs": "media1"}
    roles = ProcessRoles.from_config(load_config_from_dict(shared))
    assert roles.media_serving == "none" and not roles.runs("media")
    assert _media_targets(shared) == {("media1",)}
    worker = ProcessRoles.from_config(load_config_from_dict({**shared, **MEDIA_WORKER}))
    assert worker.runs("media")
