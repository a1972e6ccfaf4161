#!/usr/bin/env python3
"""Start Myelin locally on SQLite and on PostgreSQL and run bench/loadgen.py against each.

For every (engine, load, repeat) a fresh server with a fresh database is
started on 127.0.0.1 (tests/support/server.py ``launch_server``, which sets
lenient ``rc_*`` limits), the load generator runs as a separate process, and
the CPU time of the server, the load generator and (for PostgreSQL) the
postgres backends is sampled from /proc over the send phase. Medians over the
repeats are printed as a table; every raw summary lands in ``--out-dir``.

    .venv/bin/python bench/run_local.py                      # full: 2 engines x 2 loads x 3
    .venv/bin/python bench/run_local.py --quick              # smoke: short runs, 1 repeat
    .venv/bin/python bench/run_local.py --engines sqlite --loads light --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "src"))

from tests.support.postgres import PostgresServer, start_postgres  # noqa: E402
from tests.support.server import ServerProcess, launch_server  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
CODE_UNDER_TEST = ""


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, in seconds (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def read_loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty-src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def children_of(ppid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                out.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return out


class CpuSampler(threading.Thread):
    """Samples cumulative CPU seconds of named process groups every ``interval`` s."""

    def __init__(self, groups: dict[str, Any], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.groups = groups  # name -> callable returning list of pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._halt = threading.Event()
        # postgres backends come and go: remember the last value of each pid
        self._last: dict[str, dict[int, float]] = {g: {} for g in groups}

    def sample(self) -> None:
        row: dict[str, float] = {}
        for name, pids_fn in self.groups.items():
            for pid in pids_fn():
                v = proc_cpu_seconds(pid)
                if v is not None:
                    self._last[name][pid] = v
            row[name] = sum(self._last[name].values())
        # the whole machine (busy, all CPUs) and the hypervisor's steal, in CPU seconds
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        row["machine"] = (cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7]) / CLK_TCK
        row["steal"] = cpu[7] / CLK_TCK
        self.samples.append((time.time(), row))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def cpu_percent(self, t0: float, t1: float) -> dict[str, float]:
        """Average CPU% (100 = one core) per group between wall times t0 and t1."""
        def at(t: float) -> tuple[float, dict[str, float]]:
            best = self.samples[0]
            for s in self.samples:
                if s[0] <= t:
                    best = s
                else:
                    break
            return best
        a, b = at(t0), at(t1)
        span = b[0] - a[0]
        if span <= 0:
            return {}
        out = {k: round(100 * (b[1][k] - a[1].get(k, 0.0)) / span, 1) for k in b[1]}
        out["others"] = round(out["machine"] - out["server"] - out["postgres"]
                              - out["loadgen"], 1)
        return out


LOADS: dict[str, list[str]] = {
    # many senders as fast as the server takes them
    "heavy": ["--users", "20", "--rooms", "5", "--senders", "10", "--rate", "0",
              "--duration", "30"],
    # 5 events/s in total: the "delivered within a few ms" figure
    "light": ["--users", "20", "--rooms", "5", "--senders", "5", "--rate", "5",
              "--duration", "20"],
    # one sender, two users, one room, 2 events/s: the notifier path with no queueing
    "solo": ["--users", "2", "--rooms", "1", "--senders", "1", "--rate", "2",
             "--duration", "15"],
    # write throughput: many rooms, two members each, so sends rather than
    # the /sync fan-out set the pace
    "pairs": ["--users", "2", "--rooms", "20", "--senders", "20", "--rate", "0",
              "--duration", "20"],
}
QUICK = {name: ["--duration", "5"] for name in LOADS}


def snapshot_src(ref: str) -> tuple[str, str]:
    """Export ``src/`` at a git ref into a temp dir, so edits to the working tree
    (others keep committing while a long benchmark runs) cannot change the code
    under test halfway. Returns (directory holding the ``myelin`` package, commit)."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", ref], check=True,
                            capture_output=True, text=True).stdout.strip()
    dest = tempfile.mkdtemp(prefix=f"myelin-src-{commit}-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return os.path.join(dest, "src"), commit


def run_one(engine: str, load: str, pg: PostgresServer | None, out_dir: str, rep: int,
            quick: bool, log_level: str, extra_loadgen: list[str]) -> dict[str, Any]:
    os.environ["MYELIN_LOG_LEVEL"] = log_level
    server: ServerProcess = launch_server(engine, pg)
    assert server.proc is not None
    server_pid = server.proc.pid
    postmaster: int | None = None
    if pg is not None:
        with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
            postmaster = int(f.readline())

    def pg_pids() -> list[int]:
        return [] if postmaster is None else [postmaster, *children_of(postmaster)]
    json_out = os.path.join(out_dir, f"{engine}-{load}-{rep}.json")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "loadgen.py"),
           "--base-url", server.base_url, "--shared-secret", server.shared_secret,
           "--json-out", json_out, *LOADS[load], *(QUICK[load] if quick else []),
           *extra_loadgen]
    holder: dict[str, int] = {}
    sampler = CpuSampler({"server": lambda: [server_pid], "postgres": pg_pids,
                          "loadgen": lambda: [holder["pid"]] if "pid" in holder else []})
    sampler.start()
    t_begin = time.time()
    loadavg_before = read_loadavg()
    try:
        lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        holder["pid"] = lg.pid
        try:
            output, _ = lg.communicate(timeout=600)  # bounded: loadgen bounds itself too
        except subprocess.TimeoutExpired:
            lg.kill()
            output, _ = lg.communicate()
        sampler.stop()
        print(output, end="")
        server_exit = server.proc.poll()
        shutil.copy(server.log_path, json_out.replace(".json", "-server.log"))
        if not os.path.exists(json_out):
            # the load generator died (e.g. the server went away during setup)
            print(f"--- no summary; loadgen exit {lg.returncode}, server exit {server_exit};"
                  f" server log tail ---\n{server.log()[-3000:]}\n---")
            return {"engine": engine, "load": load, "repeat": rep, "failed": True,
                    "loadgen_exit": lg.returncode, "server_exit": server_exit,
                    "output_tail": output[-3000:]}
        with open(json_out) as f:
            summary: dict[str, Any] = json.load(f)
        summary["failed"] = False
        summary["loadgen_exit"] = lg.returncode
        summary["cpu_percent_send_phase"] = sampler.cpu_percent(summary["send_started"],
                                                                summary["send_ended"])
        summary["engine"], summary["load"], summary["repeat"] = engine, load, rep
        summary["loadavg_before"] = loadavg_before
        summary["loadavg_after"] = read_loadavg()
        summary["git"] = CODE_UNDER_TEST or git_describe()
        summary["server_exit"] = server_exit
        summary["wall_s"] = round(time.time() - t_begin, 1)
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=2)
        if summary["error_count"] or not summary["ok"] or server_exit is not None:
            tail = server.log()[-3000:]
            print(f"--- server exit {summary['server_exit']}; log tail ({engine}) ---\n"
                  f"{tail}\n---")
        return summary
    finally:
        if sampler.is_alive():
            sampler.stop()
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def med(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    return round(m, 1) if isinstance(m, float) else m


def table(results: list[dict[str, Any]]) -> str:
    cols = ["engine", "load", "n", "sent/s", "deliv/s", "send p50/p95/p99 ms",
            "deliv(done) p50/p95/p99 ms", "deliv(start) p50/p95/p99 ms", "srv CPU%",
            "pg CPU%", "lg CPU%", "others CPU%", "load1", "errors", "ok"]
    rows = []
    keys = sorted({(r["engine"], r["load"]) for r in results})
    for engine, load in keys:
        rs = [r for r in results if r["engine"] == engine and r["load"] == load
              and not r.get("failed")]
        if not rs:
            continue

        def trip(name: str, rs: list[dict[str, Any]] = rs) -> str:
            return "/".join(str(med([r[name][p] for r in rs])) for p in ("p50", "p95", "p99"))

        def cpu(name: str, rs: list[dict[str, Any]] = rs) -> str:
            return str(med([r["cpu_percent_send_phase"].get(name) for r in rs]))
        rows.append([engine, load, str(len(rs)), str(med([r["sent_per_s"] for r in rs])),
                     str(med([r["delivered_per_s"] for r in rs])), trip("send_latency_ms"),
                     trip("delivery_from_send_done_ms"), trip("delivery_from_send_start_ms"),
                     cpu("server"), cpu("postgres") if engine == "postgres" else "-",
                     cpu("loadgen"), cpu("others"),
                     str(med([r["loadavg_before"][0] for r in rs])),
                     str(sum(r["error_count"] for r in rs)),
                     "yes" if all(r["ok"] for r in rs) else "NO"])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    failed = [r for r in results if r.get("failed")]
    if failed:
        lines.append(f"({len(failed)} run(s) produced no summary and are left out: "
                     + ", ".join(f"{r['engine']}/{r['load']}#{r['repeat']}" for r in failed)
                     + ")")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--loads", default="heavy,light",
                   help=f"comma-separated, from {', '.join(LOADS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="5 s runs, for a smoke test")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results",
                                                     time.strftime("%Y%m%d-%H%M%S")))
    p.add_argument("--log-level", default="WARNING",
                   help="server MYELIN_LOG_LEVEL (INFO logs every request)")
    p.add_argument("--src-ref", default="HEAD",
                   help="git ref whose src/ the server runs (exported to a temp dir); "
                        "'worktree' runs the working tree as it is")
    p.add_argument("loadgen_args", nargs="*", help="extra loadgen args after --")
    a = p.parse_args()
    engines = [e for e in a.engines.split(",") if e]
    loads = [x for x in a.loads.split(",") if x]
    os.makedirs(a.out_dir, exist_ok=True)
    global CODE_UNDER_TEST
    src_dir = ""
    if a.src_ref != "worktree":
        src_dir, CODE_UNDER_TEST = snapshot_src(a.src_ref)
        os.environ["PYTHONPATH"] = src_dir + os.pathsep + os.environ.get("PYTHONPATH", "")
        print(f"server code: src/ at {CODE_UNDER_TEST} ({src_dir})")
    pg = start_postgres() if "postgres" in engines else None
    results: list[dict[str, Any]] = []
    try:
        # interleave engines and loads per repeat so a noisy spell hits all alike
        for rep in range(1, a.repeats + 1):
            for engine in engines:
                for load in loads:
                    print(f"=== {engine} / {load} / repeat {rep} ===", flush=True)
                    results.append(run_one(engine, load, pg if engine == "postgres" else None,
                                           a.out_dir, rep, a.quick, a.log_level,
                                           a.loadgen_args))
    finally:
        if pg is not None:
            pg.stop()
        if a.src_ref != "worktree":
            shutil.rmtree(os.path.dirname(src_dir), ignore_errors=True)
    return report(results, table(results), a.out_dir, "Medians over repeats:")


def report(results: list[dict[str, Any]], text: str, out_dir: str, title: str = "") -> int:
    """Print the table, keep it and the raw results in ``out_dir``; the exit code."""
    print(f"\n{title}\n{text}" if title else f"\n{text}")
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, "all.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nraw results in {out_dir}")
    return 0 if all(not r.get("failed") and r["ok"] and not r["error_count"]
                    for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
