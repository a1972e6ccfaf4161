"""Run matrix-js-sdk scenarios (tests/js/scenarios/*.mjs) under Node and return their result.

A scenario receives its parameters as one JSON object (env MYELIN_JS_PARAMS) and prints one
JSON line: ``{"ok": true, "result": ...}``, or ``{"ok": false, "error": {...}}`` and exits
non-zero. ``run_js`` returns the result, or raises :class:`JSClientError` carrying the error
(Matrix ``errcode``/``httpStatus`` included when the SDK had them) and the scenario's stderr.

Without Node or without ``tests/js/node_modules`` (``npm ci --prefix tests/js``) the calling
test is skipped, except under CI (env ``CI`` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCENARIOS = JS_DIR / "scenarios"
POLYFILL = JS_DIR / "polyfill.cjs"
DEFAULT_TIMEOUT = 90.0
# The scenario's own deadline is this much shorter than ours, so that it can still report
# where it was stuck (as a JSON error) before we have to kill it.
_MARGIN = 10.0


class JSClientError(AssertionError):
    """A scenario failed; ``error`` is its JSON error description (may be empty)."""

    def __init__(self, message: str, error: dict[str, Any] | None = None,
                 stderr: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.error = error or {}
        self.stderr = stderr
        self.returncode = returncode

    @property
    def errcode(self) -> str | None:
        return self.error.get("errcode")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def node_binary() -> str:
    """The node executable, skipping (or failing in CI) when the JS harness can't run."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    modules = JS_DIR / "node_modules"
    if not modules.is_dir():
        _unavailable(f"{modules} is missing: run `npm ci --prefix tests/js`")
    if not (modules / "matrix-js-sdk").is_dir():
        pytest.fail(f"{modules} has no matrix-js-sdk: rerun `npm ci --prefix tests/js`",
                    pytrace=False)
    return node


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _result_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "ok" in value:
            return value
    return None


def run_js(scenario: str, *, timeout: float = DEFAULT_TIMEOUT, **params: Any) -> Any:
    """Run ``tests/js/scenarios/<scenario>.mjs`` with ``params``; return its result.

    ``timeout`` (seconds) bounds the whole node process; set env MYELIN_JS_DEBUG=1 to get the
    SDK's debug logging in the failure output.
    """
    node = node_binary()
    script = SCENARIOS / (scenario if scenario.endswith(".mjs") else f"{scenario}.mjs")
    if not script.is_file():
        raise FileNotFoundError(f"no such JS scenario: {script}")
    env = {
        **os.environ,
        "MYELIN_JS_PARAMS": json.dumps(params),
        "MYELIN_JS_TIMEOUT_MS": str(int(max(timeout - _MARGIN, timeout / 2) * 1000)),
        "NODE_NO_WARNINGS": "1",
    }
    try:
        proc = subprocess.run(
            [node, "--require", str(POLYFILL), str(script)], cwd=JS_DIR, env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            check=False)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise JSClientError(f"JS scenario {scenario!r} killed after {timeout}s\n"
                            f"--- stderr ---\n{_tail(err or '')}", stderr=err or "") from None
    line = _result_line(proc.stdout)
    if proc.returncode == 0 and line is not None and line.get("ok") is True:
        return line.get("result")
    error = line.get("error") if line else None
    summary = json.dumps({k: v for k, v in (error or {}).items() if k != "stack"}, indent=1)
    raise JSClientError(
        f"JS scenario {scenario!r} failed (exit {proc.returncode}): {summary}\n"
        f"--- stack ---\n{(error or {}).get('stack', '')}\n"
        f"--- stderr ---\n{_tail(proc.stderr)}\n--- stdout ---\n{_tail(proc.stdout, 2000)}",
        error=error if isinstance(error, dict) else None, stderr=proc.stderr,
        returncode=proc.returncode)
