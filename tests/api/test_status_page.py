"""The status page's HTML, rendered from a status document (no server needed)."""

from __future__ import annotations

from myelin.api.status_page import render

STATUS = {
    "instance": "main",
    "streams": {"events": {"position": 40, "lag": 2,
                           "writers": {"event_persister1": 40, "event_persister2": 42}}},
    "fleet": [
        {"instance": "main", "app": "synapse.app.homeserver", "roles": ["main"], "age_s": 0.0,
         "silent": False, "requests_per_s": 1.5, "errors_per_s": 0, "errors_logged": 1,
         "recent_errors": [{"time": 1700000000.0, "level": "ERROR", "logger": "myelin.x",
                            "request": "GET-7 /x", "message": "<b>boom</b>"}],
         "lag": {"events": 2}, "sync_waiting": 3, "cpu_s": 1.0, "rss_bytes": 2**21},
        {"instance": "generic_worker1", "app": "synapse.app.generic_worker",
         "roles": ["generic"], "age_s": 40.0, "silent": True, "lag": {"events": 0}},
    ],
}


def test_page_reloads_itself_and_lists_processes_streams_and_errors() -> None:
    page = render(STATUS, "example.org")
    assert "<meta http-equiv='refresh'" in page
    assert "data-instance='generic_worker1'" in page and "SILENT, 40.0 s ago" in page
    assert "class='process silent'" in page
    assert "<span class='writer-position'>42</span>" in page
    assert "GET-7 /x" in page


def test_text_from_the_fleet_is_escaped() -> None:
    page = render(STATUS, "example.org")
    assert "<b>boom</b>" not in page
    assert "&lt;b&gt;boom&lt;/b&gt;" in page


def test_no_errors_is_said_plainly() -> None:
    quiet = {**STATUS, "fleet": [{**STATUS["fleet"][0], "recent_errors": []}]}
    assert "id='no-errors'" in render(quiet, "example.org")
