"""The ``myelin`` command line: generate-config, run, register-user, check-config,
routes (the reverse-proxy config of a fleet), fleet (start/stop/status) and
port-db (SQLite to PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import json
import logging
import logging.config
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from myelin.config import ConfigError, HomeserverConfig, load_config


def _setup_logging(config: HomeserverConfig | None) -> None:
    from myelin.logs import (
        UnknownSynapseClassError,
        keep_recent_errors,
        stderr_formatter,
        translate_log_config,
    )

    # A worker logs by `worker_log_config`; the shared file's `log_config` is
    # the main process's (it would have every worker write main's log file).
    key = "log_config" if config is None or config.is_main_process else "worker_log_config"
    log_config: str | None = getattr(config, key, None)
    if config is not None and log_config:
        import yaml

        try:
            with open(log_config, encoding="utf-8") as f:
                logging.config.dictConfig(translate_log_config(yaml.safe_load(f)))
        except (OSError, ValueError, TypeError, AttributeError, ImportError, yaml.YAMLError,
                UnknownSynapseClassError) as e:
            raise ConfigError(key, f"cannot use {log_config}: {e}",
                              config.sources.get(key)) from None
        keep_recent_errors()
        return
    handler = logging.StreamHandler(sys.stderr)
    # MYELIN_LOG_FORMAT=json: one JSON object per line (structured logs).
    handler.setFormatter(stderr_formatter(os.environ.get("MYELIN_LOG_FORMAT", "text")))
    logging.basicConfig(level=os.environ.get("MYELIN_LOG_LEVEL", "INFO"), handlers=[handler])
    if os.environ.get("MYELIN_ACCESS_LOG", "0") != "1":
        logging.getLogger("myelin.access").setLevel(logging.WARNING)
    keep_recent_errors()


def cmd_generate_config(args: argparse.Namespace) -> int:
    from myelin.config.generate import generate_config

    try:
        path = generate_config(args.server_name, args.config_path, args.data_dir,
                               report_stats=False)
    except FileExistsError as e:
        print(f"myelin: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config_path)
        from myelin.app.homeserver import HomeServer

        HomeServer._check_signing_key_file(config)
    except ConfigError as e:
        print(f"myelin: {e}", file=sys.stderr)
        return 1
    print(f"config OK: {config.instance_name} ({config.worker_app}) for {config.server_name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from myelin.app.process import StartupError, run_process

    try:
        config = load_config(args.config_path)
        _setup_logging(config)
    except ConfigError as e:
        print(f"myelin: {e}", file=sys.stderr)
        return 1
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional on exotic platforms
        pass
    try:
        asyncio.run(run_process(config))
    except (StartupError, ConfigError) as e:
        logging.getLogger("myelin").error("cannot start: %s", e)
        print(f"myelin: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _client_base_url(config: HomeserverConfig) -> str:
    for listener in config.listeners:
        if "client" in listener.resources and listener.port:
            host = "localhost"
            for address in listener.bind_addresses:
                if address not in ("::", "0.0.0.0"):
                    host = f"[{address}]" if ":" in address else address
                    break
            return f"http://{host}:{listener.port}"
    return config.public_baseurl.rstrip("/")


def _http_json(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
            message = err.get("error") or err
        except ValueError:
            message = e.reason
        raise RuntimeError(f"{e.code}: {message}") from None


def cmd_register_user(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config_path)
    except ConfigError as e:
        print(f"myelin: {e}", file=sys.stderr)
        return 1
    secret = config.registration_shared_secret
    if not secret:
        print("myelin: registration_shared_secret is not set in the config", file=sys.stderr)
        return 1
    base = (args.url or _client_base_url(config)).rstrip("/")
    password = args.password or getpass.getpass("Password: ")
    user = args.user
    admin = bool(args.admin)
    try:
        nonce = _http_json("GET", f"{base}/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        mac.update(nonce.encode() + b"\x00" + user.encode() + b"\x00" + password.encode()
                   + b"\x00" + (b"admin" if admin else b"notadmin"))
        result = _http_json("POST", f"{base}/_synapse/admin/v1/register", {
            "nonce": nonce, "username": user, "password": password, "admin": admin,
            "mac": mac.hexdigest(),
        })
    except (RuntimeError, OSError) as e:
        print(f"myelin: registration failed: {e}", file=sys.stderr)
        return 1
    print(f"registered {result['user_id']}")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    from myelin.app.proxy import routes_command

    return routes_command(args.config_path, args.workers, nginx=args.nginx,
                          listen=args.listen, full=args.full, prefix=args.prefix,
                          user=args.user)


def cmd_fleet(args: argparse.Namespace) -> int:
    from myelin.app.fleet import fleet_command

    return fleet_command(args.action, args.config_path, args.workers, args.run_dir,
                         args.timeout)


def cmd_port_db(args: argparse.Namespace) -> int:
    from myelin.app.port_db import port_db_command

    return port_db_command(args.sqlite_database, args.config_path, args.batch_size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myelin", description="Myelin Matrix homeserver")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate-config", help="write a new homeserver.yaml")
    gen.add_argument("--server-name", required=True)
    gen.add_argument("--config-path", required=True)
    gen.add_argument("--data-dir", default=None,
                     help="where the database, signing key and media go "
                          "(default: the config file's directory)")
    gen.set_defaults(func=cmd_generate_config)

    run = sub.add_parser("run", help="run the process the config describes")
    run.add_argument("--config-path", "-c", action="append", required=True)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate config files without starting")
    check.add_argument("--config-path", "-c", action="append", required=True)
    check.set_defaults(func=cmd_check_config)

    reg = sub.add_parser("register-user", help="register a user via the shared-secret API")
    reg.add_argument("--config-path", "-c", action="append", required=True)
    reg.add_argument("--user", "-u", required=True)
    reg.add_argument("--password", "-p", default=None)
    reg.add_argument("--admin", action="store_true")
    reg.add_argument("--url", default=None, help="base URL of the server (default: from config)")
    reg.set_defaults(func=cmd_register_user)

    routes = sub.add_parser("routes", help="which process serves each route; an nginx config")
    mode = routes.add_mutually_exclusive_group(required=True)
    mode.add_argument("--nginx", action="store_true",
                      help="print an nginx config that sends each route to its process")
    mode.add_argument("--check", action="store_true",
                      help="print each route and the processes serving it")
    routes.add_argument("--config-path", "-c", action="append", required=True,
                        help="the shared config (main's); may be given several times")
    routes.add_argument("--workers", default=None, metavar="DIR",
                        help="directory of worker files (every *.yaml)")
    routes.add_argument("--listen", default="8008",
                        help="nginx `listen` value for the server (default 8008)")
    routes.add_argument("--full", action="store_true",
                        help="a whole nginx.conf (events, http, pid, logs under --prefix)")
    routes.add_argument("--prefix", default=None, metavar="DIR",
                        help="with --full: where nginx keeps its pid, logs and temp files "
                             "(default: the current directory)")
    routes.add_argument("--user", default=None,
                        help="with --full: the `user` directive (needed when nginx runs "
                             "as root and the files under --prefix are private)")
    routes.set_defaults(func=cmd_routes)

    fleet = sub.add_parser("fleet", help="start, stop or inspect main and every worker")
    fleet.add_argument("action", choices=["start", "stop", "status"])
    fleet.add_argument("--config-path", "-c", action="append", required=True,
                       help="the shared config (main's); may be given several times")
    fleet.add_argument("--workers", default=None, metavar="DIR",
                       help="directory of worker files (every *.yaml)")
    fleet.add_argument("--run-dir", default=None, metavar="DIR",
                       help="where pid and log files go (default: run/ next to the config)")
    fleet.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for processes to come up or stop (default 60)")
    fleet.set_defaults(func=cmd_fleet)

    port = sub.add_parser("port-db", help="copy a stopped SQLite server into PostgreSQL")
    port.add_argument("--sqlite-database", required=True, metavar="FILE",
                      help="the SQLite file of the stopped server")
    port.add_argument("--config-path", "-c", action="append", required=True,
                      help="a config whose `database:` is the PostgreSQL target")
    port.add_argument("--batch-size", type=int, default=1000,
                      help="rows per batch (default 1000)")
    port.set_defaults(func=cmd_port_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
