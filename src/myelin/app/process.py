"""Running one process: open the database, build the HomeServer, listen, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from myelin.app import pidfile
from myelin.app.homeserver import HomeServer
from myelin.app.servlets import routes_for_resources
from myelin.config import HomeserverConfig
from myelin.http.server import HttpDispatcher, Listener, server_ssl_context
from myelin.storage.engines import open_database
from myelin.storage.engines.postgres import DatabaseCollationError
from myelin.storage.migrations import SchemaTooNewError

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The process cannot start; the message is the one-line reason."""


async def build_homeserver(config: HomeserverConfig) -> HomeServer:
    db_config = config.database
    where = (db_config.path if db_config.engine == "sqlite" else
             f"{db_config.database or '(default)'} at {db_config.host or 'localhost'}:"
             f"{db_config.port}")
    try:
        db = await open_database(db_config)
    except (DatabaseCollationError, SchemaTooNewError) as e:
        raise StartupError(f"cannot use the {db_config.engine} database {where}: {e}") from e
    except (OSError, ConnectionError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise StartupError(f"cannot open the {db_config.engine} database {where}: "
                           f"{reason}") from e
    except Exception as e:
        if type(e).__module__.startswith(("asyncpg", "sqlite3")):
            raise StartupError(f"cannot open the {db_config.engine} database {where}: "
                               f"{e}") from e
        raise
    return HomeServer(config, db)


async def start_listeners(hs: HomeServer) -> None:
    for listener_config in hs.config.listeners:
        if listener_config.type not in ("http", "metrics"):
            continue
        routes = routes_for_resources(listener_config.resources,
                                      main=hs.config.is_main_process,
                                      media_serving=hs.roles.media_serving)
        dispatcher = HttpDispatcher(hs, routes, x_forwarded=listener_config.x_forwarded)
        ssl_context = None
        if listener_config.tls:
            federation = hs.config.federation
            assert federation.tls_certificate_path and federation.tls_private_key_path
            try:
                ssl_context = server_ssl_context(federation.tls_certificate_path,
                                                 federation.tls_private_key_path)
            except (OSError, ssl.SSLError) as e:
                raise StartupError(f"cannot load tls_certificate_path "
                                   f"{federation.tls_certificate_path} / tls_private_key_path "
                                   f"{federation.tls_private_key_path}: {e}") from e
        listener = Listener(listener_config, dispatcher, ssl_context)
        try:
            await listener.start()
        except OSError as e:
            raise StartupError(str(e)) from e
        hs.listeners.append(listener)
        logger.info("listening on %s for %s", ", ".join(listener.bound),
                    ", ".join(sorted(listener_config.resources)))


def _refuse_second_copy(config: HomeserverConfig) -> str | None:
    """The worker's pid file, after checking no live copy of it holds it."""
    pid_file = None if config.is_main_process else config.worker_pid_file
    if pid_file is None:
        return None
    running = pidfile.running_pid(pid_file)
    if running is not None:
        raise StartupError(f"worker {config.instance_name} is already running "
                           f"(pid {running}, pid file {pid_file})")
    return pid_file


async def run_process(config: HomeserverConfig) -> None:
    """Run until SIGTERM/SIGINT, then finish in-flight requests and return."""
    pid_file = _refuse_second_copy(config)
    hs = await build_homeserver(config)
    wrote_pid_file = False
    try:
        await hs.start()
        await start_listeners(hs)
        if pid_file is not None:
            try:
                pidfile.write_pid_file(pid_file)
            except OSError as e:
                raise StartupError(f"cannot write worker_pid_file {pid_file}: "
                                   f"{e.strerror or e}") from e
            wrote_pid_file = True
        logger.info("%s (%s) started for %s", config.instance_name, config.worker_app,
                    config.server_name)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("shutting down")
    finally:
        # Wake the long-polls, then let the listeners finish the requests in
        # flight (a persister completes the sends it accepted) while the bus
        # and the database are still there; only then stop the rest.
        hs.notifier.shutdown()
        # A request waiting on another server (a join through a server that
        # never answers) would hold the drain for its whole timeout: outbound
        # federation ends now, and such a request fails at once (502).
        if "federation_client" in hs.__dict__:
            await hs.federation_client.close()
        await asyncio.gather(*(listener.stop() for listener in hs.listeners))
        await hs.stop()
        await hs.db.close()
        if wrote_pid_file and pid_file is not None:
            pidfile.remove_pid_file(pid_file)
