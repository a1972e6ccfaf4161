"""The application-service API as Myelin calls it: ``{url}/_matrix/app/v1/...``.

Every request carries ``Authorization: Bearer <hs_token>`` (and, with
``use_appservice_legacy_authorization``, the old ``?access_token=``). A
service without a ``url`` is never called: queries find nothing and
transactions count as delivered.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from typing import Any

import aiohttp
import orjson

from myelin.appservice.registration import AppService
from myelin.domain import MatrixError

logger = logging.getLogger(__name__)

PREFIX = "/_matrix/app/v1"
QUERY_TIMEOUT_S = 30.0
PUSH_TIMEOUT_S = 60.0


class AppServiceApi:
    def __init__(self, legacy_authorization: bool = False, *, verify_tls: bool = True) -> None:
        self.legacy_authorization = legacy_authorization
        self.verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None if self.verify_tls else aiohttp.TCPConnector(ssl=False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, service: AppService, method: str, path: str, *,
                       query: dict[str, str] | None = None, body: Any = None,
                       limit_s: float = QUERY_TIMEOUT_S) -> tuple[int, bytes]:
        assert service.url is not None
        params = dict(query or {})
        if self.legacy_authorization:
            params["access_token"] = service.hs_token
        headers = {"Authorization": f"Bearer {service.hs_token}"}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        async with self._client().request(
                method, service.url + PREFIX + path, params=params, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit_s)) as response:
            return response.status, await response.read()

    # -- transactions ---------------------------------------------------------
    async def push(self, service: AppService, txn_id: int, body: bytes) -> bool:
        """Send one transaction; True when the service acknowledged it."""
        if service.url is None:
            return True
        try:
            status, answer = await self._request(
                service, "PUT", f"/transactions/{txn_id}", body=orjson.loads(body),
                limit_s=PUSH_TIMEOUT_S)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            logger.info("appservice %s: transaction %d failed: %s", service.id, txn_id, e)
            return False
        if 200 <= status < 300:
            return True
        logger.info("appservice %s: transaction %d answered %d: %s", service.id, txn_id,
                    status, answer[:200])
        return False

    # -- queries --------------------------------------------------------------
    async def query_user(self, service: AppService, user_id: str) -> bool:
        return await self._query(service, f"/users/{urllib.parse.quote(user_id)}")

    async def query_alias(self, service: AppService, alias: str) -> bool:
        return await self._query(service, f"/rooms/{urllib.parse.quote(alias)}")

    async def _query(self, service: AppService, path: str) -> bool:
        """Whether the service says it has (now created) the entity."""
        if service.url is None:
            return False
        try:
            status, _ = await self._request(service, "GET", path)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            logger.info("appservice %s: query %s failed: %s", service.id, path, e)
            return False
        return 200 <= status < 300

    async def thirdparty(self, service: AppService, path: str,
                         fields: dict[str, str]) -> Any:
        """A third-party lookup's JSON answer, or None when the service failed."""
        if service.url is None:
            return None
        try:
            status, answer = await self._request(service, "GET", "/thirdparty" + path,
                                                 query=fields)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            logger.info("appservice %s: thirdparty %s failed: %s", service.id, path, e)
            return None
        if status != 200:
            return None
        try:
            return orjson.loads(answer)
        except orjson.JSONDecodeError:
            return None

    async def ping(self, service: AppService, transaction_id: str | None) -> int:
        """The round trip of ``POST /ping`` in ms; the spec's errors otherwise."""
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "Application service URL is not set")
        body: dict[str, Any] = {}
        if transaction_id is not None:
            body["transaction_id"] = transaction_id
        start = time.monotonic()
        try:
            status, answer = await self._request(service, "POST", "/ping", body=body)
        except TimeoutError:
            raise MatrixError(504, "M_CONNECTION_TIMEOUT",
                              "Connection to application service timed out") from None
        except (aiohttp.ClientError, OSError):
            raise MatrixError(502, "M_CONNECTION_FAILED",
                              "Connection to application service failed") from None
        if not 200 <= status < 300:
            error = MatrixError(502, "M_BAD_STATUS",
                                "Application service returned a non-2xx status")
            error.extra.update(status=status, body=answer.decode("utf-8", "replace"))
            raise error
        # Rounded up: a round trip takes time, and clients read 0 as "unknown".
        return math.ceil((time.monotonic() - start) * 1000)
