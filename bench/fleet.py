#!/usr/bin/env python3
"""Run bench/loadgen.py against a Myelin fleet behind nginx, and against the
monolith, both on PostgreSQL.

The fleet is the seed's example layout (tests/support/fleet.py: main, two
event persisters, a stream writer, a background worker, two generic workers,
Redis, nginx from ``myelin routes --nginx --full``); the monolith is one
``myelin run`` (tests/support/server.py). Each (shape, load, repeat) gets a
fresh server and database; the loads are bench/run_local.py's. Reported per
run: events/s sent and delivered, send and delivery p50/p95, CPU% of the
server processes and PostgreSQL over the send phase, and each process's RSS
(from /proc/<pid>/status: VmRSS at the end of the send phase, VmHWM peak).

    .venv/bin/python bench/fleet.py --quick                  # smoke: 5 s runs, 1 repeat
    .venv/bin/python bench/fleet.py --shapes fleet,monolith --loads heavy,pairs --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from run_local import (  # noqa: E402
    LOADS,
    QUICK,
    CpuSampler,
    children_of,
    git_describe,
    med,
    report,
    snapshot_src,
)

from tests.support.fleet import LAYOUT, Fleet  # noqa: E402
from tests.support.postgres import PostgresServer, start_postgres  # noqa: E402
from tests.support.server import launch_server  # noqa: E402

# Fleet layouts: process -> (client listener, replication listener), and their
# stream writers. "fleet" is the seed's example; "direct" gives its persisters
# client listeners, so nginx sends each room's events to its persister; "1p" and
# "2p" are small fleets for 2 cores: main, one generic worker (sync and the
# rest) and one or two persisters that take their rooms' sends first-hand.
FLEET_SHAPES: dict[str, tuple[dict[str, tuple[bool, bool]] | None, dict[str, Any] | None]] = {
    "fleet": (None, None),
    "direct": ({**LAYOUT, "event_persister1": (True, True), "event_persister2": (True, True)},
               None),
    "1p": ({"main": (True, True), "event_persister1": (True, True),
            "generic_worker1": (True, True)}, {"events": ["event_persister1"]}),
    "2p": ({"main": (True, True), "event_persister1": (True, True),
            "event_persister2": (True, True), "generic_worker1": (True, True)},
           {"events": ["event_persister1", "event_persister2"]}),
}
SHAPES = (*FLEET_SHAPES, "monolith")


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pids: dict[str, int]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, pid in pids.items():
        rss, hwm = proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM")
        out[name] = {"rss": None if rss is None else round(rss / 1024, 1),
                     "peak": None if hwm is None else round(hwm / 1024, 1)}
    return out


def run_one(shape: str, load: str, pg: PostgresServer, out_dir: str, rep: int, quick: bool,
            log_level: str, extra_loadgen: list[str]) -> dict[str, Any]:
    os.environ["MYELIN_LOG_LEVEL"] = log_level
    fleet: Fleet | None = None
    server = None
    t_begin = time.time()
    try:
        if shape in FLEET_SHAPES:
            layout, writers = FLEET_SHAPES[shape]
            fleet = Fleet(pg, log_level=log_level, layout=layout, stream_writers=writers)
            fleet.start()
            base_url, secret = fleet.base_url, fleet.shared_secret
            pids = {name: pid for name in fleet.layout if (pid := fleet.pid(name)) is not None}
            if fleet.nginx is not None:
                pids["nginx"] = fleet.nginx.pid
        else:
            server = launch_server("postgres", pg)
            assert server.proc is not None
            base_url, secret = server.base_url, server.shared_secret
            pids = {"monolith": server.proc.pid}
        with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
            postmaster = int(f.readline())

        def server_pids() -> list[int]:
            out = list(pids.values())
            if "nginx" in pids:
                out += children_of(pids["nginx"])  # the nginx worker processes
            return out

        json_out = os.path.join(out_dir, f"{shape}-{load}-{rep}.json")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "loadgen.py"),
               "--base-url", base_url, "--shared-secret", secret, "--json-out", json_out,
               *LOADS[load], *(QUICK[load] if quick else []), *extra_loadgen]
        holder: dict[str, int] = {}
        groups: dict[str, Any] = {
            "server": server_pids,
            "postgres": lambda: [postmaster, *children_of(postmaster)],
            "loadgen": lambda: [holder["pid"]] if "pid" in holder else [],
        }
        for name, pid in pids.items():
            with_children = name == "nginx"
            groups[f"p:{name}"] = (lambda pid=pid, kids=with_children:
                                   [pid, *children_of(pid)] if kids else [pid])
        sampler = CpuSampler(groups)
        sampler.start()
        memory: dict[str, Any] = {}
        lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        holder["pid"] = lg.pid
        try:
            output, _ = lg.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            lg.kill()
            output, _ = lg.communicate()
        memory = rss_mb(pids)
        sampler.stop()
        print(output, end="")
        if not os.path.exists(json_out):
            logs = fleet.all_errors() if fleet else (server.log()[-3000:] if server else "")
            print(f"--- no summary (loadgen exit {lg.returncode}) ---\n{logs}\n---")
            return {"shape": shape, "load": load, "repeat": rep, "failed": True}
        with open(json_out) as f:
            summary: dict[str, Any] = json.load(f)
        summary.update(shape=shape, load=load, repeat=rep, failed=False, memory_mb=memory,
                       git=git_describe(), wall_s=round(time.time() - t_begin, 1),
                       cpu_percent_send_phase=sampler.cpu_percent(summary["send_started"],
                                                                  summary["send_ended"]))
        if fleet is not None:
            errors = fleet.all_errors()
            summary["process_errors"] = errors.count("\n") + 1 if errors else 0
            if errors:
                print(f"--- ERROR lines in the fleet's logs ---\n{errors[-3000:]}\n---")
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=2)
        return summary
    finally:
        if fleet is not None:
            fleet.stop()
            fleet.cleanup()
        if server is not None:
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)


def table(results: list[dict[str, Any]]) -> str:
    cols = ["shape", "load", "n", "sent/s", "deliv/s", "send p50/p95 ms", "deliv p50/p95 ms",
            "server CPU%", "pg CPU%", "RSS MB (sum)", "errors", "ok"]
    rows = []
    for shape, load in sorted({(r["shape"], r["load"]) for r in results}):
        rs = [r for r in results if (r["shape"], r["load"]) == (shape, load)
              and not r.get("failed")]
        if not rs:
            continue

        def pair(name: str, rs: list[dict[str, Any]] = rs) -> str:
            return "/".join(str(med([r[name][p] for r in rs])) for p in ("p50", "p95"))

        rss = med([sum(m["rss"] or 0 for m in r["memory_mb"].values()) for r in rs])
        rows.append([shape, load, str(len(rs)), str(med([r["sent_per_s"] for r in rs])),
                     str(med([r["delivered_per_s"] for r in rs])), pair("send_latency_ms"),
                     pair("delivery_from_send_done_ms"),
                     str(med([r["cpu_percent_send_phase"].get("server") for r in rs])),
                     str(med([r["cpu_percent_send_phase"].get("postgres") for r in rs])),
                     str(rss), str(sum(r["error_count"] for r in rs)),
                     "yes" if all(r["ok"] for r in rs) else "NO"])
    lines = _grid(cols, rows)
    # Per process: RSS (end of the send phase), peak RSS and CPU%, from the last repeat.
    per_cols = ["shape", "load", "process", "RSS MB", "peak MB", "CPU%"]
    per_rows = []
    for shape, load in sorted({(r["shape"], r["load"]) for r in results}):
        rs = [r for r in results if (r["shape"], r["load"]) == (shape, load)
              and not r.get("failed")]
        if not rs:
            continue
        last = rs[-1]
        for name, mem in last["memory_mb"].items():
            per_rows.append([shape, load, name, str(mem["rss"]), str(mem["peak"]),
                             str(last["cpu_percent_send_phase"].get(f"p:{name}"))])
    return "\n".join([*lines, "", "per process (last repeat):", *_grid(per_cols, per_rows)])


def _grid(cols: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="fleet,monolith", help=f"from {', '.join(SHAPES)}")
    p.add_argument("--loads", default="heavy,pairs", help=f"from {', '.join(LOADS)}")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="5 s runs")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results",
                                                     "fleet-" + time.strftime("%Y%m%d-%H%M%S")))
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--src-ref", default="worktree",
                   help="git ref whose src/ the servers run (exported to a temp dir); "
                        "'worktree' (default) runs the working tree")
    p.add_argument("loadgen_args", nargs="*", help="extra loadgen args after --")
    a = p.parse_args()
    shapes = [s for s in a.shapes.split(",") if s]
    loads = [x for x in a.loads.split(",") if x]
    unknown = [s for s in shapes if s not in SHAPES] + [x for x in loads if x not in LOADS]
    if unknown:
        p.error(f"unknown shape/load: {', '.join(unknown)}")
    os.makedirs(a.out_dir, exist_ok=True)
    src_dir = ""
    if a.src_ref != "worktree":
        src_dir, commit = snapshot_src(a.src_ref)
        os.environ["PYTHONPATH"] = src_dir + os.pathsep + os.environ.get("PYTHONPATH", "")
        print(f"server code: src/ at {commit} ({src_dir})")
    pg = start_postgres()
    results: list[dict[str, Any]] = []
    try:
        for rep in range(1, a.repeats + 1):
            for shape in shapes:
                for load in loads:
                    print(f"=== {shape} / {load} / repeat {rep} ===", flush=True)
                    results.append(run_one(shape, load, pg, a.out_dir, rep, a.quick,
                                           a.log_level, a.loadgen_args))
    finally:
        pg.stop()
        if src_dir:
            shutil.rmtree(os.path.dirname(src_dir), ignore_errors=True)
    return report(results, table(results), a.out_dir)


if __name__ == "__main__":
    sys.exit(main())
