"""A Synapse admin's ``log_config`` works unchanged, and logs say which request.

The configs below are written the way Synapse's documentation gives them
(the sample log config of the installation docs, and the structured-logging
one): Synapse's class names, ``%(request)s`` in the format, a buffering
handler in front of a rotating file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

from tests.support.server import launch_server

SYNAPSE_SAMPLE = """\
version: 1

formatters:
    precise:
        format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'

handlers:
    file:
        class: logging.handlers.TimedRotatingFileHandler
        formatter: precise
        filename: {log_file}
        when: midnight
        backupCount: 3
        encoding: utf8

    buffer:
        class: synapse.logging.handlers.PeriodicallyFlushingMemoryHandler
        target: file
        capacity: 10
        flushLevel: 30
        period: 5

    console:
        class: logging.StreamHandler
        formatter: precise

loggers:
    synapse.storage.SQL:
        level: INFO

root:
    level: INFO
    handlers: [buffer]

disable_existing_loggers: false
"""

SYNAPSE_STRUCTURED = """\
version: 1

formatters:
    structured:
        class: synapse.logging.TerseJsonFormatter

filters:
    context:
        (): synapse.logging.context.LoggingContextFilter
        request: ""

handlers:
    file:
        class: logging.FileHandler
        formatter: structured
        filters: [context]
        filename: {log_file}

root:
    level: INFO
    handlers: [file]

disable_existing_loggers: false
"""


def _run_with_log_config(template: str) -> str:
    workdir = tempfile.mkdtemp(prefix="myelin-logs-")
    log_file = os.path.join(workdir, "homeserver.log")
    config_path = os.path.join(workdir, "log.config")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(template.format(log_file=log_file))
    server = launch_server("sqlite", None, {"log_config": config_path})
    try:
        status, _ = server.request("GET", "/_matrix/client/versions")
        assert status == 200
        status, _ = server.request("GET", "/_matrix/client/v3/account/whoami",
                                   token="syt_bm9ib2R5_wrongtoken_0000")
        assert status == 401
    finally:
        assert server.stop() == 0
    with open(log_file, encoding="utf-8") as f:
        return f.read()


def test_synapse_sample_log_config_fills_the_request_field() -> None:
    text = _run_with_log_config(SYNAPSE_SAMPLE)
    assert "Formatting field not found" not in text
    lines = text.splitlines()
    assert lines, "the log file stayed empty"
    # Outside a request the field is "-"; inside, the method, request id and path.
    assert any(re.search(r" - INFO - - - ", line) for line in lines), lines[:5]
    served = [line for line in lines
              if re.search(r" - GET-\d+ /_matrix/client/versions - ", line)]
    assert served, lines[-10:]


def test_synapse_structured_logging_config_writes_json_lines() -> None:
    text = _run_with_log_config(SYNAPSE_STRUCTURED)
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records
    assert {"time", "level", "namespace", "request", "log"} <= set(records[0])
    assert any(r["request"].endswith("/_matrix/client/v3/account/whoami") for r in records), \
        records[-5:]


def test_an_unknown_synapse_class_is_a_config_error_that_names_it() -> None:
    workdir = tempfile.mkdtemp(prefix="myelin-logs-")
    config_path = os.path.join(workdir, "log.config")
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"version": 1, "handlers": {"x": {
            "class": "synapse.logging.NoSuchHandler"}}, "root": {"handlers": ["x"]}}, f)
    hs_config = os.path.join(workdir, "homeserver.yaml")
    subprocess.run([sys.executable, "-m", "myelin", "generate-config", "--server-name",
                    "logs.test", "--config-path", hs_config], check=True, capture_output=True)
    with open(hs_config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["log_config"] = config_path
    with open(hs_config, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    done = subprocess.run([sys.executable, "-m", "myelin", "run", "--config-path", hs_config],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "synapse.logging.NoSuchHandler" in done.stderr
    assert "log_config" in done.stderr


def test_json_logs_on_stderr_without_a_log_config() -> None:
    server = launch_server("sqlite", None)
    server.stop()
    env = {**os.environ, "MYELIN_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "myelin", "run", "--config-path",
                             server.config_path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    proc.terminate()
    proc.communicate(timeout=30)
    record = json.loads(first)
    assert record["level"] in ("INFO", "WARNING") and record["request"] == "-"


def test_remote_handler_sends_formatted_lines_to_a_log_collector() -> None:
    import logging
    import logging.config
    import socket

    from myelin.logs import current_request, translate_log_config

    collector = socket.create_server(("127.0.0.1", 0))
    port = collector.getsockname()[1]
    logging.config.dictConfig(translate_log_config({
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"class": "synapse.logging.TerseJsonFormatter"}},
        "handlers": {"remote": {"class": "synapse.logging.RemoteHandler", "host": "127.0.0.1",
                                "port": port, "formatter": "json"}},
        "loggers": {"myelin.test_remote": {"handlers": ["remote"], "level": "INFO",
                                           "propagate": False}}}))
    logger = logging.getLogger("myelin.test_remote")
    try:
        token = current_request.set("PUT-9 /_matrix/client/v3/rooms/x/send")
        try:
            logger.info("sent %d events", 3)
        finally:
            current_request.reset(token)
        conn, _ = collector.accept()
        conn.settimeout(10)
        data = b""
        while not data.endswith(b"\n"):
            data += conn.recv(4096)
        record = json.loads(data)
        assert record["log"] == "sent 3 events"
        assert record["request"] == "PUT-9 /_matrix/client/v3/rooms/x/send"
        conn.close()
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        collector.close()
