"""Other servers' signing keys: ``hs.keyring``.

A key is looked up in memory, then in ``server_signing_keys``, then fetched:
from the server itself (``GET /_matrix/key/v2/server``), and failing that from
each of ``trusted_key_servers`` (``POST /_matrix/key/v2/query``). Concurrent
lookups for one server share one fetch. A fetched response must be signed by
the keys it lists (and a notary's copy by the notary too); its
``valid_until_ts`` is capped at the fetch time plus 7 days, as the spec says
servers must. A key is usable for a signature made at ``valid_at_ts`` when it
was valid then: a current key up to its ``valid_until_ts``, a key from
``old_verify_keys`` before its ``expired_ts``; so a key valid at an old
event's ``origin_server_ts`` still verifies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import EventFormat, RoomVersion
from myelin.events.signing import (
    SignatureError,
    VerifyKey,
    decode_verify_key_base64,
    verify_signed_json,
)
from myelin.storage.stores.server_keys import StoredServerKey

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
KEY_FETCH_TIMEOUT_S = 15.0
# After a failed lookup of a key, signatures needing it fail at once for this
# long instead of asking again: the events of a server that has gone away
# (joining a big room brings many) cost one attempt, not one each.
FAILED_LOOKUP_RETRY_S = 30.0


@dataclass(frozen=True)
class ServerKey:
    key: VerifyKey
    valid_until_ts: int  # for an old key: its expired_ts
    old: bool

    def usable_at(self, ts: int) -> bool:
        return ts < self.valid_until_ts if self.old else ts <= self.valid_until_ts


class KeyFetchError(Exception):
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decode_key(key_id: str, b64: Any) -> VerifyKey:
    alg, _, version = key_id.partition(":")
    if not isinstance(b64, str) or alg != "ed25519" or not version:
        raise KeyFetchError(f"unusable key {key_id}")
    try:
        return decode_verify_key_base64(alg, version, b64)
    except Exception as e:
        raise KeyFetchError(f"undecodable key {key_id}: {e}") from None


def parse_key_response(response: Any, server_name: str, fetched_ts: int
                       ) -> tuple[dict[str, ServerKey], int]:
    """The keys of a ``/key/v2/server`` response, checked self-signed; and its
    (uncapped) ``valid_until_ts``."""
    if not isinstance(response, dict) or response.get("server_name") != server_name:
        raise KeyFetchError(f"key response is not for {server_name}")
    valid_until = response.get("valid_until_ts")
    if isinstance(valid_until, bool) or not isinstance(valid_until, int):
        raise KeyFetchError("key response lacks valid_until_ts")
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict):
        raise KeyFetchError("key response lacks verify_keys")
    capped = min(valid_until, fetched_ts + MAX_KEY_VALIDITY_MS)
    keys: dict[str, ServerKey] = {}
    for key_id, entry in verify_keys.items():
        if not isinstance(entry, dict) or not key_id.startswith("ed25519:"):
            continue
        keys[key_id] = ServerKey(_decode_key(key_id, entry.get("key")), capped, False)
    # The response must carry the signature of each key it lists.
    signed_by = [k for k in keys if k in (response.get("signatures") or {}).get(server_name, {})]
    if not signed_by:
        raise KeyFetchError(f"key response is not signed by {server_name}'s own keys")
    for key_id in signed_by:
        try:
            verify_signed_json(response, server_name, keys[key_id].key)
        except SignatureError as e:
            raise KeyFetchError(f"key response signature: {e}") from None
    old_keys = response.get("old_verify_keys")
    if isinstance(old_keys, dict):
        for key_id, entry in old_keys.items():
            if key_id in keys or not isinstance(entry, dict) or \
                    not key_id.startswith("ed25519:"):
                continue
            expired = entry.get("expired_ts")
            if isinstance(expired, bool) or not isinstance(expired, int):
                continue
            try:
                keys[key_id] = ServerKey(_decode_key(key_id, entry.get("key")), expired, True)
            except KeyFetchError:
                continue
    return keys, valid_until


class Keyring:
    """Finds and caches other servers' verify keys; verifies signatures with them."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._keys: dict[str, dict[str, ServerKey]] = {}
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[tuple[str, str], float] = {}  # (server, key id) -> monotonic time
        self.fetches = 0  # remote fetches made (tests, metrics)

    # -- the interface -------------------------------------------------------
    async def verify_json(self, server_name: str, signed: dict[str, Any], *,
                          valid_at_ts: int) -> None:
        """Check ``signed`` carries a valid signature of ``server_name`` by a key
        valid at ``valid_at_ts``. Raises :class:`SignatureError`."""
        signatures = signed.get("signatures")
        server_sigs = signatures.get(server_name) if isinstance(signatures, dict) else None
        if not isinstance(server_sigs, dict) or not server_sigs:
            raise SignatureError(f"not signed by {server_name}")
        key_ids = [k for k in server_sigs if isinstance(k, str) and k.startswith("ed25519:")]
        if not key_ids:
            raise SignatureError(f"no supported signature from {server_name}")
        verified = False
        for key_id in key_ids:
            key = await self.get_key(server_name, key_id, valid_at_ts)
            if key is None:
                continue  # unknown or expired: skipped, as the spec says
            verify_signed_json(signed, server_name, key)
            verified = True
        if not verified:
            raise SignatureError(f"no key of {server_name} valid at {valid_at_ts} for "
                                 f"{', '.join(sorted(key_ids))}")

    async def verify_event_signatures(self, pdu: dict[str, Any],
                                      room_version: RoomVersion) -> None:
        """Every signature the spec requires on a received event (on its redacted form)."""
        redacted = prune_event_dict(pdu, room_version)
        ts = pdu.get("origin_server_ts")
        # Before room version 5 the key's validity period was not enforced.
        valid_at = ts if room_version.enforce_key_validity and isinstance(ts, int) else 0
        for server_name in required_signers(pdu, room_version):
            await self.verify_json(server_name, redacted, valid_at_ts=valid_at)

    # -- lookup ----------------------------------------------------------------
    async def get_key(self, server_name: str, key_id: str, valid_at_ts: int) -> VerifyKey | None:
        if server_name == self.hs.server_name:
            return self._own_key(key_id, valid_at_ts)
        key = self._usable(server_name, key_id, valid_at_ts)
        if key is None:
            # Another process may have fetched it since: the table before the network.
            await self._load(server_name)
            key = self._usable(server_name, key_id, valid_at_ts)
        if key is None:
            failed = self._failed.get((server_name, key_id))
            if failed is not None and time.monotonic() - failed < FAILED_LOOKUP_RETRY_S:
                return None
            try:
                await self._fetch_once(server_name, key_id, valid_at_ts)
            except KeyFetchError as e:
                logger.info("no key %s for %s: %s", key_id, server_name, e)
            key = self._usable(server_name, key_id, valid_at_ts)
            if key is None:
                if len(self._failed) > 10_000:
                    self._failed.clear()
                self._failed[(server_name, key_id)] = time.monotonic()
            else:
                self._failed.pop((server_name, key_id), None)
        return key

    def _usable(self, server_name: str, key_id: str, valid_at_ts: int) -> VerifyKey | None:
        key = self._keys.get(server_name, {}).get(key_id)
        return key.key if key is not None and key.usable_at(valid_at_ts) else None

    def _own_key(self, key_id: str, valid_at_ts: int) -> VerifyKey | None:
        own = self.hs.signing_key
        if key_id == f"{own.alg}:{own.version}":
            return VerifyKey(bytes(own.verify_key), own.version, own.alg)
        for old in self.hs.config.federation.old_signing_keys:
            if old.key_id == key_id and valid_at_ts < old.expired_ts:
                return _decode_key(key_id, old.key)
        return None

    async def _load(self, server_name: str) -> None:
        rows = await self.hs.stores.server_keys.keys_for_server(server_name)
        cached = self._keys.setdefault(server_name, {})
        for row in rows:
            try:
                key = ServerKey(_decode_key(row.key_id, row.verify_key), row.valid_until_ts,
                                row.old)
            except KeyFetchError:
                continue
            current = cached.get(row.key_id)
            if current is None or current.valid_until_ts < key.valid_until_ts:
                cached[row.key_id] = key

    async def _fetch_once(self, server_name: str, key_id: str, valid_at_ts: int) -> None:
        """Fetch ``server_name``'s keys, sharing a fetch already under way.

        The fetch runs as its own task: a caller that goes away (a client
        hanging up) stops waiting, it does not cancel the fetch others wait on."""
        task = self._fetching.get(server_name)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._fetch(server_name, key_id, valid_at_ts))
            self._fetching[server_name] = task

            def done(finished: asyncio.Task[None]) -> None:
                self._fetching.pop(server_name, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved, even when every waiter left

            task.add_done_callback(done)
        await asyncio.shield(task)

    async def _fetch(self, server_name: str, key_id: str, valid_at_ts: int) -> None:
        errors = []
        try:
            await self._fetch_direct(server_name)
        except KeyFetchError as e:
            errors.append(f"{server_name}: {e}")
        else:
            if not key_id or self._usable(server_name, key_id, valid_at_ts) is not None:
                return
        for notary in self.hs.config.federation.trusted_key_servers:
            if notary.server_name in (server_name, self.hs.server_name):
                continue
            try:
                await self._fetch_from_notary(notary.server_name, notary.verify_keys,
                                              server_name, key_id, valid_at_ts)
            except KeyFetchError as e:
                errors.append(f"notary {notary.server_name}: {e}")
                continue
            if self._usable(server_name, key_id, valid_at_ts) is not None:
                return
        raise KeyFetchError("; ".join(errors) or "not found")

    async def _fetch_direct(self, server_name: str) -> None:
        from myelin.federation.client import FederationError, FederationUnreachable

        self.fetches += 1
        fetched_ts = _now_ms()
        try:
            response = await self.hs.federation_client.request(
                "GET", server_name, "/_matrix/key/v2/server", args=None, body=None,
                timeout_s=KEY_FETCH_TIMEOUT_S, sign=False)
        except (FederationError, FederationUnreachable) as e:
            raise KeyFetchError(str(e)) from None
        await self._accept(server_name, response, fetched_ts, server_name)

    async def _fetch_from_notary(self, notary: str, notary_keys: dict[str, str],
                                 server_name: str, key_id: str, valid_at_ts: int) -> None:
        from myelin.federation.client import FederationError, FederationUnreachable

        self.fetches += 1
        fetched_ts = _now_ms()
        criteria = {server_name: {key_id: {"minimum_valid_until_ts": valid_at_ts}}}
        try:
            answer = await self.hs.federation_client.request(
                "POST", notary, "/_matrix/key/v2/query", args=None,
                body={"server_keys": criteria}, timeout_s=KEY_FETCH_TIMEOUT_S)
        except (FederationError, FederationUnreachable) as e:
            raise KeyFetchError(str(e)) from None
        responses = answer.get("server_keys") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            raise KeyFetchError("notary answer lacks server_keys")
        for response in responses:
            if not isinstance(response, dict) or response.get("server_name") != server_name:
                continue
            await self._check_notary_signature(notary, notary_keys, response)
            await self._accept(server_name, response, fetched_ts, notary)

    async def _check_notary_signature(self, notary: str, notary_keys: dict[str, str],
                                      response: dict[str, Any]) -> None:
        if notary_keys:
            sigs = (response.get("signatures") or {}).get(notary, {})
            usable = [k for k in notary_keys if k in sigs]
            if not usable:
                raise KeyFetchError("response not signed by the notary's configured keys")
            for key_id in usable:
                try:
                    verify_signed_json(response, notary, _decode_key(key_id, notary_keys[key_id]))
                except SignatureError as e:
                    raise KeyFetchError(f"notary signature: {e}") from None
            return
        try:
            await self.verify_json(notary, response, valid_at_ts=_now_ms())
        except SignatureError as e:
            raise KeyFetchError(f"notary signature: {e}") from None

    async def _accept(self, server_name: str, response: Any, fetched_ts: int,
                      from_server: str) -> None:
        keys, valid_until = parse_key_response(response, server_name, fetched_ts)
        cached = self._keys.setdefault(server_name, {})
        for key_id, key in keys.items():
            current = cached.get(key_id)
            if current is None or current.valid_until_ts <= key.valid_until_ts or \
                    current.old != key.old:
                cached[key_id] = key
        await self.hs.stores.server_keys.store_keys(
            StoredServerKey(server_name, key_id, _b64(key.key), key.valid_until_ts, key.old,
                            fetched_ts, from_server) for key_id, key in keys.items())
        # Only the server's own signatures are served again as a notary.
        own = {k: v for k, v in response.items() if k != "signatures"}
        own["signatures"] = {server_name: response["signatures"][server_name]}
        await self.hs.stores.server_keys.store_key_response(
            server_name, keys, valid_until, fetched_ts, from_server,
            orjson.dumps(own).decode())

    # -- notary support --------------------------------------------------------
    async def key_responses(self, server_name: str, criteria: dict[str, int | None]
                            ) -> list[dict[str, Any]]:
        """``server_name``'s signed key responses for our notary endpoint.

        ``criteria``: key id → the ``minimum_valid_until_ts`` asked for (None:
        not given); empty: every key we know. A key's latest stored response
        answers when it is valid that long (without a minimum: when less than
        half its lifetime has passed); otherwise the server is asked again,
        and what we then hold is the answer, even if expired: a stale key
        beats none, and an origin that forgot a key does not make us forget
        it."""
        if server_name == self.hs.server_name:
            from myelin.api.keys.server import own_key_response

            return [own_key_response(self.hs)]
        store = self.hs.stores.server_keys
        cached = await store.key_responses(server_name)
        now = _now_ms()
        wanted = list(criteria) or list(cached)
        stale = not wanted
        for key_id in wanted:
            hit = cached.get(key_id)
            minimum = criteria.get(key_id)
            if hit is None:
                stale = True
            elif minimum is not None:
                stale = stale or hit.valid_until_ts < minimum
            elif now > hit.fetched_ts + (hit.valid_until_ts - hit.fetched_ts) // 2:
                stale = True
        if stale and self.hs.config.federation.allows_domain(server_name):
            try:
                await self._fetch_once(server_name, "", now)
            except KeyFetchError as e:
                logger.info("notary: cannot fetch keys of %s: %s", server_name, e)
            cached = await store.key_responses(server_name)
        texts = dict.fromkeys(cached[k].key_json for k in (list(criteria) or list(cached))
                              if k in cached)
        return [orjson.loads(text) for text in texts]


def _b64(key: VerifyKey) -> str:
    from myelin.events.signing import encode_verify_key_base64

    return encode_verify_key_base64(key)


def _domain(identifier: Any) -> str | None:
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1]


def required_signers(pdu: dict[str, Any], room_version: RoomVersion) -> list[str]:
    """The servers whose signatures a received event must carry.

    - the sender's server, except on an invite made from a third-party invite
      (the sender matches the 3pid invite; another server may send it);
    - room versions 1 and 2: the server in the ``event_id``;
    - a restricted join: the server of ``join_authorised_via_users_server``.
    """
    servers: list[str] = []
    content = pdu.get("content") if isinstance(pdu.get("content"), dict) else {}
    assert isinstance(content, dict)
    membership = content.get("membership") if pdu.get("type") == "m.room.member" else None
    third_party = membership == "invite" and "third_party_invite" in content
    sender = _domain(pdu.get("sender"))
    if sender is None:
        raise SignatureError("event has no valid sender")
    if not third_party:
        servers.append(sender)
    if room_version.event_format == EventFormat.V1:
        event_server = _domain(pdu.get("event_id"))
        if event_server is None:
            raise SignatureError("event has no valid event_id")
        servers.append(event_server)
    if membership == "join" and room_version.restricted_join_rule:
        via = _domain(content.get("join_authorised_via_users_server"))
        if via is not None:
            servers.append(via)
    return list(dict.fromkeys(servers))

