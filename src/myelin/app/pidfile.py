"""A worker's pid file (`worker_pid_file`).

It is written once the worker listens and removed when it stops cleanly, so
a fleet tool can find the process. A pid file left by a process that died is
stale and simply replaced; one naming a live Myelin process means this worker
is already running, and a second copy must not start.
"""

from __future__ import annotations

import contextlib
import os


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _is_myelin(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: trust the pid
        return True
    return b"myelin" in cmdline


def running_pid(path: str) -> int | None:
    """The pid of the live Myelin process ``path`` names, or None if the file
    is absent, unreadable as a pid, stale, or names this very process."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    if pid <= 0 or pid == os.getpid():
        return None
    if _is_alive(pid) and _is_myelin(pid):
        return pid
    return None


def write_pid_file(path: str) -> None:
    """Write this process's pid, replacing the file in one step."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_pid_file(path: str) -> None:
    """Remove the pid file if it is still ours (never another copy's)."""
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass
