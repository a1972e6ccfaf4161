"""``GET /_myelin/status.html`` on the ``metrics`` resource: the fleet on one page.

Server-rendered HTML, no scripts and no build step, that reloads itself:
every process (app, roles, heard from how long ago, request and error
rates, CPU, memory), every stream with each writer's position and each
process's lag, and the latest errors anywhere in the fleet. It is built from
this process's ``/_myelin/status`` (its view of the streams) and what the
others publish on the bus (``app/fleet_status.py``). Like the metrics, it is
meant for a listener only admins reach.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from aiohttp import web

from myelin.http.request import Request
from myelin.http.routing import RouteTable, plain_path

routes = RouteTable("metrics")

REFRESH_S = 5

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.silent td { background: #fdd; } td.lagging { background: #ffe9b3; }
.muted { color: #777; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(cls: str, value: Any, extra: str = "") -> str:
    return f'<td class="num {cls}{extra}">{_e(value)}</td>'


def render(status: dict[str, Any], server_name: str) -> str:
    fleet: list[dict[str, Any]] = status.get("fleet") or []
    streams: dict[str, dict[str, Any]] = status.get("streams") or {}
    names = sorted(streams)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
           f"<meta http-equiv='refresh' content='{REFRESH_S}'>",
           f"<title>Myelin status: {_e(server_name)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{_e(server_name)} <span class='muted'>— as seen by "
           f"<span id='seen-by'>{_e(status.get('instance'))}</span> at "
           f"{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()))} UTC, "
           f"reloads every {REFRESH_S} s</span></h1>"]

    out.append("<h2>Processes</h2><table id='processes'><tr><th>instance</th><th>app</th>"
               "<th>roles</th><th>heard</th><th>requests/s</th><th>5xx/s</th>"
               "<th>errors logged</th><th>syncs waiting</th><th>CPU s</th><th>RSS MiB</th>"
               "<th>max lag</th></tr>")
    for proc in fleet:
        lag = proc.get("lag") or {}
        max_lag = max(lag.values(), default=0)
        silent = bool(proc.get("silent"))
        heard = "now" if proc.get("age_s", 0) < 1 else f"{proc.get('age_s')} s ago"
        out.append(
            f"<tr class='process{' silent' if silent else ''}' "
            f"data-instance='{_e(proc.get('instance'))}'>"
            f"<td class='instance'>{_e(proc.get('instance'))}</td>"
            f"<td class='app'>{_e(proc.get('app'))}</td>"
            f"<td class='roles'>{_e(', '.join(proc.get('roles') or []))}</td>"
            f"<td class='heard'>{'SILENT, ' if silent else ''}{_e(heard)}</td>"
            + _num("requests", proc.get("requests_per_s", 0))
            + _num("errors5xx", proc.get("errors_per_s", 0))
            + _num("errors-logged", proc.get("errors_logged", 0))
            + _num("sync-waiting", proc.get("sync_waiting", 0))
            + _num("cpu", proc.get("cpu_s", 0))
            + _num("rss", round(int(proc.get("rss_bytes", 0)) / 2**20, 1))
            + _num("max-lag", max_lag, " lagging" if max_lag else "") + "</tr>")
    out.append("</table>")

    out.append("<h2>Streams</h2><table id='streams'><tr><th>stream</th>"
               "<th>readable position</th><th>lag</th><th>writers (position)</th></tr>")
    for name in names:
        info = streams[name]
        writers = " ".join(
            f"<span class='writer' data-writer='{_e(w)}'>{_e(w)}: "
            f"<span class='writer-position'>{_e(p)}</span></span>"
            for w, p in sorted((info.get("writers") or {}).items()))
        lag = info.get("lag", 0)
        out.append(f"<tr class='stream' data-stream='{_e(name)}'>"
                   f"<td>{_e(name)}</td>" + _num("position", info.get("position", 0))
                   + _num("lag", lag, " lagging" if lag else "") + f"<td>{writers}</td></tr>")
    out.append("</table>")

    out.append("<h2>Lag by process</h2><table id='lag'><tr><th>instance</th>"
               + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
    for proc in fleet:
        lag = proc.get("lag") or {}
        cells = "".join(
            f"<td class='num{' lagging' if lag.get(n) else ''}' data-stream='{_e(n)}'>"
            f"{_e(lag.get(n, '?'))}</td>" for n in names)
        out.append(f"<tr data-instance='{_e(proc.get('instance'))}'>"
                   f"<td>{_e(proc.get('instance'))}</td>{cells}</tr>")
    out.append("</table>")

    errors = sorted(((e, proc.get("instance")) for proc in fleet
                     for e in proc.get("recent_errors") or []),
                    key=lambda pair: -float(pair[0].get("time", 0)))[:20]
    out.append("<h2>Recent errors</h2>")
    if not errors:
        out.append("<p id='no-errors' class='muted'>None logged.</p>")
    else:
        out.append("<table id='errors'><tr><th>time (UTC)</th><th>instance</th><th>logger</th>"
                   "<th>request</th><th>message</th></tr>")
        for err, instance in errors:
            when = time.strftime("%H:%M:%S", time.gmtime(float(err.get("time", 0))))
            out.append(f"<tr class='error'><td>{_e(when)}</td><td>{_e(instance)}</td>"
                       f"<td>{_e(err.get('logger'))}</td><td>{_e(err.get('request'))}</td>"
                       f"<td>{_e(err.get('message'))}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


@routes.get(plain_path("/_myelin/status.html"))
async def status_page(request: Request) -> web.Response:
    status = await request.hs.status()
    return web.Response(text=render(status, request.hs.config.server_name),
                        content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
