"""End-to-end encryption keys: upload, query, claim, changes, cross-signing and signatures.

Keys of users on other servers are asked of their servers (all at once, each
within the request's ``timeout``; a server that fails is listed in
``failures``): device lists of users we share a room with come from the
cache `federation.device_lists` keeps, the others from ``/user/keys/query``.
The ``local_*`` methods are what this server answers other servers with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from myelin.domain import MatrixError, Requester, bad_json, forbidden
from myelin.replication.tokens import SyncToken

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

logger = logging.getLogger(__name__)

CROSS_SIGNING_TYPES = {"master_key": "master", "self_signing_key": "self_signing",
                       "user_signing_key": "user_signing"}


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def _split_key_id(full: str) -> tuple[str, str]:
    algorithm, sep, key_id = full.partition(":")
    if not sep or not algorithm or not key_id:
        raise _invalid(f"Invalid key id {full!r}: expected <algorithm>:<key_id>")
    return algorithm, key_id


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _ed25519_public_key(key: dict[str, Any]) -> str | None:
    """The public key of a cross-signing key (its one ``ed25519:<pub>`` entry)."""
    keys = key.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        return None
    (key_id, value), = keys.items()
    if not isinstance(key_id, str) or not key_id.startswith("ed25519:") \
            or not isinstance(value, str):
        return None
    return value


def _verify(obj: dict[str, Any], signer_user: str, key_id: str, public_key: str) -> bool:
    """Does ``obj`` carry a valid signature by ``signer_user``'s ed25519 key ``key_id``?"""
    try:
        verify_key = decode_verify_key_bytes(f"ed25519:{key_id}", decode_base64(public_key))
        verify_signed_json(obj, signer_user, verify_key)
    except (SignatureVerifyException, ValueError, TypeError, KeyError):
        return False
    except Exception:  # a malformed key or signature: not valid either
        logger.debug("signature check failed", exc_info=True)
        return False
    return True


def _add_signatures(obj: dict[str, Any], rows: list[tuple[str, str, str]]) -> dict[str, Any]:
    if not rows:
        return obj
    signatures = dict(obj.get("signatures") or {})
    for signer, signer_key, signature in rows:
        signatures[signer] = {**signatures.get(signer, {}), signer_key: signature}
    return {**obj, "signatures": signatures}


def _timeout_s(body: dict[str, Any]) -> float:
    """The request's ``timeout`` (ms) for remote servers, in seconds."""
    timeout = body.get("timeout", 10_000)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise bad_json("timeout must be a non-negative integer")
    return min(timeout, 60_000) / 1000


def _claim_request(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise bad_json("one_time_keys must be an object")
    for devices in wanted.values():
        if not isinstance(devices, dict):
            raise bad_json("one_time_keys must map users to devices to algorithms")
        if not all(isinstance(a, str) for a in devices.values()):
            raise bad_json("algorithms must be strings")
    return wanted


def _merge_remote_keys(result: dict[str, Any], server: str, answer: dict[str, Any]) -> None:
    """A server's keys answer into a /keys/query result: only its own users."""
    for field in ("device_keys", "master_keys", "self_signing_keys"):
        got = answer.get(field)
        if not isinstance(got, dict):
            continue
        for user_id, value in got.items():
            if isinstance(user_id, str) and user_id.split(":", 1)[-1] == server \
                    and isinstance(value, dict):
                result[field][user_id] = value


class E2EKeysHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.e2e_keys

    # -- upload ------------------------------------------------------------
    async def upload(self, requester: Requester, body: dict[str, Any]) -> dict[str, Any]:
        user_id, device_id = requester.user_id, requester.device_id
        if not device_id:
            raise _invalid("This access token has no device: cannot upload keys")
        device_keys = body.get("device_keys")
        if device_keys is not None:
            if not isinstance(device_keys, dict):
                raise bad_json("device_keys must be an object")
            if device_keys.get("user_id") != user_id or \
                    device_keys.get("device_id") != device_id:
                raise _invalid("Can only upload keys for the current user and device")
            if not isinstance(device_keys.get("keys"), dict):
                raise bad_json("device_keys.keys must be an object")
            stored = {k: v for k, v in device_keys.items() if k != "unsigned"}
            if await self.store.set_device_keys(user_id, device_id, stored):
                await self.hs.devices.notify_device_change(user_id, device_id)

        one_time_keys = body.get("one_time_keys")
        if one_time_keys is not None:
            await self._add_one_time_keys(user_id, device_id, one_time_keys)

        fallback_keys = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        if fallback_keys is not None:
            if not isinstance(fallback_keys, dict):
                raise bad_json("fallback_keys must be an object")
            for full_id, key in fallback_keys.items():
                algorithm, key_id = _split_key_id(full_id)
                if not isinstance(key, dict | str):
                    raise bad_json("fallback keys must be objects or strings")
                await self.store.set_fallback_key(user_id, device_id, algorithm, key_id, key)

        counts = await self.store.count_one_time_keys(user_id, device_id)
        # Clients take a missing count as "unknown"; say 0 for the usual algorithm.
        counts.setdefault("signed_curve25519", 0)
        return {"one_time_key_counts": counts}

    async def _add_one_time_keys(self, user_id: str, device_id: str, keys: Any) -> None:
        if not isinstance(keys, dict):
            raise bad_json("one_time_keys must be an object")
        parsed: list[tuple[str, str, Any]] = []
        for full_id, key in keys.items():
            algorithm, key_id = _split_key_id(full_id)
            if not isinstance(key, dict | str):
                raise bad_json("one-time keys must be objects or strings")
            parsed.append((algorithm, key_id, key))
        existing = await self.store.get_one_time_keys(
            user_id, device_id, [(a, k) for a, k, _ in parsed])
        new = []
        for algorithm, key_id, key in parsed:
            old = existing.get((algorithm, key_id))
            if old is None:
                new.append((algorithm, key_id, key))
            elif orjson.loads(old) != key:
                raise MatrixError(400, "M_UNKNOWN",
                                  f"One-time key {algorithm}:{key_id} already exists")
        await self.store.add_one_time_keys(user_id, device_id, new)

    # -- query -------------------------------------------------------------
    async def query(self, requester: Requester, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object")
        timeout_s = _timeout_s(body)
        result: dict[str, Any] = {"device_keys": {}, "failures": {}, "master_keys": {},
                                  "self_signing_keys": {}, "user_signing_keys": {}}
        remote: dict[str, dict[str, list[str]]] = {}
        for user_id, device_ids in wanted.items():
            if not isinstance(user_id, str) or not isinstance(device_ids, list) or \
                    not all(isinstance(d, str) for d in device_ids):
                raise bad_json("device_keys must map user IDs to lists of device IDs")
            if not self.hs.is_mine(user_id):
                remote.setdefault(user_id.split(":", 1)[-1], {})[user_id] = device_ids
                continue
            result["device_keys"][user_id] = await self._device_keys_for(
                user_id, device_ids or None)
            cross = await self._cross_signing_for(user_id, requester.user_id)
            for key_type, key in cross.items():
                if key_type == "user_signing" and user_id != requester.user_id:
                    continue
                result[f"{key_type}_keys"][user_id] = key
        if remote:
            answers, failures = await self.hs.federation_queries.per_server(
                remote, timeout_s, self._remote_device_keys)
            result["failures"].update(failures)
            for server, answer in answers.items():
                _merge_remote_keys(result, server, answer)
        return result

    async def _remote_device_keys(self, server: str,
                                  wanted: dict[str, list[str]]) -> dict[str, Any]:
        """One server's users' keys: cached lists for users we share a room
        with (fetched and cached if need be), ``/user/keys/query`` for the rest."""
        remote_devices = self.hs.remote_devices
        answer: dict[str, Any] = {"device_keys": {}, "master_keys": {},
                                  "self_signing_keys": {}}
        others: dict[str, list[str]] = {}
        for user_id, device_ids in wanted.items():
            if not await remote_devices.shares_room(user_id):
                others[user_id] = device_ids
                continue
            devices = await remote_devices.get_devices(user_id)
            keys: dict[str, Any] = {}
            for device in devices.get("devices") or []:
                if device_ids and device["device_id"] not in device_ids:
                    continue
                if isinstance(device.get("keys"), dict):
                    unsigned = {"device_display_name": device["device_display_name"]} \
                        if isinstance(device.get("device_display_name"), str) else {}
                    keys[device["device_id"]] = {**device["keys"], "unsigned": unsigned}
            answer["device_keys"][user_id] = keys
            for field in ("master_key", "self_signing_key"):
                if isinstance(devices.get(field), dict):
                    answer[f"{field}s"][user_id] = devices[field]
        if others:
            fetched = await self.hs.federation_queries.query_keys(server, others, 30.0)
            for field in ("device_keys", "master_keys", "self_signing_keys"):
                if isinstance(fetched.get(field), dict):
                    answer[field].update(fetched[field])
        return answer

    async def local_query(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /_matrix/federation/v1/user/keys/query``: our users' keys
        (device names only with ``allow_device_name_lookup_over_federation``)."""
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object")
        result: dict[str, Any] = {"device_keys": {}, "master_keys": {},
                                  "self_signing_keys": {}}
        for user_id, device_ids in wanted.items():
            if not isinstance(user_id, str) or not isinstance(device_ids, list) or \
                    not all(isinstance(d, str) for d in device_ids):
                raise bad_json("device_keys must map user IDs to lists of device IDs")
            if not self.hs.is_mine(user_id):
                continue
            keys = await self._device_keys_for(user_id, device_ids or None)
            if not self.hs.config.allow_device_name_lookup_over_federation:
                keys = {d: {**k, "unsigned": {}} for d, k in keys.items()}
            result["device_keys"][user_id] = keys
            cross = await self._cross_signing_for(user_id, user_id)
            for key_type in ("master", "self_signing"):
                if key_type in cross:
                    result[f"{key_type}_keys"][user_id] = cross[key_type]
        return result

    async def local_devices(self, user_id: str) -> dict[str, Any]:
        """``GET /_matrix/federation/v1/user/devices/{userId}`` for a local user."""
        keys = await self._device_keys_for(user_id, None)
        devices = []
        for device in await self.hs.devices.get_devices(user_id):
            entry: dict[str, Any] = {"device_id": device.device_id}
            if device.device_id in keys:
                entry["keys"] = {k: v for k, v in keys[device.device_id].items()
                                 if k != "unsigned"}
            if device.display_name and \
                    self.hs.config.allow_device_name_lookup_over_federation:
                entry["device_display_name"] = device.display_name
            devices.append(entry)
        out: dict[str, Any] = {
            "user_id": user_id, "devices": devices,
            "stream_id": await self.hs.stores.device_lists.latest_position_for_user(user_id)}
        cross = await self._cross_signing_for(user_id, user_id)
        for key_type in ("master", "self_signing"):
            if key_type in cross:
                out[f"{key_type}_key"] = cross[key_type]
        return out

    async def signed_device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        """One local device's keys with every signature uploaded for them
        (what an ``m.device_list_update`` carries)."""
        keys = await self.store.get_device_keys_json(user_id, device_id)
        if keys is None:
            return None
        signatures = await self.store.get_signatures(user_id, [device_id])
        return _add_signatures(keys, signatures.get(device_id, []))

    async def _device_keys_for(self, user_id: str, device_ids: list[str] | None,
                               ) -> dict[str, Any]:
        keys = await self.store.get_users_device_keys(user_id, device_ids)
        if not keys:
            return {}
        names = {d.device_id: d.display_name
                 for d in await self.hs.devices.get_devices(user_id)}
        signatures = await self.store.get_signatures(user_id, list(keys))
        out: dict[str, Any] = {}
        for device_id, key in keys.items():
            if device_id not in names:
                continue  # keys of a device that is gone
            key = _add_signatures(key, signatures.get(device_id, []))
            unsigned: dict[str, Any] = {}
            if names[device_id]:
                unsigned["device_display_name"] = names[device_id]
            out[device_id] = {**key, "unsigned": unsigned}
        return out

    async def _cross_signing_for(self, user_id: str, viewer: str) -> dict[str, dict[str, Any]]:
        keys = await self.store.get_cross_signing_keys(user_id)
        if not keys:
            return {}
        by_pub = {pub: key_type for key_type, key in keys.items()
                  if (pub := _ed25519_public_key(key))}
        signatures = await self.store.get_signatures(user_id, list(by_pub))
        for pub, key_type in by_pub.items():
            # Others' signatures of a master key are private to the signer.
            rows = [r for r in signatures.get(pub, []) if r[0] in (user_id, viewer)]
            keys[key_type] = _add_signatures(keys[key_type], rows)
        return keys

    # -- claim -------------------------------------------------------------
    async def claim(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = _claim_request(body)
        timeout_s = _timeout_s(body)
        local = {u: d for u, d in wanted.items() if self.hs.is_mine(u)}
        remote: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in wanted.items():
            if user_id not in local:
                remote.setdefault(user_id.split(":", 1)[-1], {})[user_id] = devices
        claimed = await self._claim_local(local)
        failures: dict[str, Any] = {}
        if remote:
            queries = self.hs.federation_queries
            answers, failures = await queries.per_server(
                remote, timeout_s, lambda server, which: queries.claim_keys(
                    server, which, timeout_s))
            for server, answer in answers.items():
                keys = answer.get("one_time_keys")
                if not isinstance(keys, dict):
                    continue
                for user_id, devices in keys.items():
                    if isinstance(user_id, str) and user_id.split(":", 1)[-1] == server \
                            and isinstance(devices, dict):
                        claimed[user_id] = devices
        return {"one_time_keys": claimed, "failures": failures}

    async def local_claim(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /_matrix/federation/v1/user/keys/claim``: our users' keys only."""
        wanted = _claim_request(body)
        return {"one_time_keys": await self._claim_local(
            {u: d for u, d in wanted.items() if self.hs.is_mine(u)})}

    async def _claim_local(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        claimed: dict[str, Any] = {}
        for user_id, devices in wanted.items():
            for device_id, algorithm in devices.items():
                got = await self.store.claim_one_time_key(user_id, device_id, algorithm)
                if got is None:
                    got = await self.store.claim_fallback_key(user_id, device_id, algorithm)
                if got is None:
                    continue
                key_id, key = got
                claimed.setdefault(user_id, {}).setdefault(device_id, {})[
                    f"{algorithm}:{key_id}"] = key
        return claimed

    # -- changes -----------------------------------------------------------
    async def changes(self, requester: Requester, from_token: str,
                      to_token: str | None) -> dict[str, Any]:
        since = SyncToken.parse(from_token)
        until = SyncToken.parse(to_token) if to_token else self.hs.streams.current_token()
        changed = await self.hs.stores.device_lists.users_changed_between(
            since["device_lists"], until["device_lists"])
        sharing = await self.store.users_sharing_rooms_with(requester.user_id)
        joined = [m.room_id for m in
                  await self.hs.stores.memberships.get_rooms_for_user(requester.user_id)]
        room_writer = self.hs.roles.writer_index
        now_sharing, no_longer = await self.membership_driven_changes(
            requester.user_id, joined, sharing,
            lambda room: since.writer_position("events", room_writer("events", room)),
            lambda room: until.writer_position("events", room_writer("events", room)))
        changed_now = {u for u in changed if u in sharing} | now_sharing
        # Rooms we left in the window: their members we share nothing else with.
        departed = [m.room_id for m in await self.hs.stores.memberships.get_rooms_for_user(
            requester.user_id, ("leave", "ban"))]
        lows = {r: since.writer_position("events", room_writer("events", r)) for r in departed}
        highs = {r: until.writer_position("events", room_writer("events", r)) for r in departed}
        if departed:
            rows = await self.hs.stores.events.membership_changes_between(
                departed, min(lows.values()), max(highs.values()))
            for position, room_id, member in rows:
                if member != requester.user_id or not lows[room_id] < position <= highs[room_id]:
                    continue
                for other in await self.hs.stores.memberships.get_members(room_id):
                    if other.user_id not in sharing:
                        no_longer.add(other.user_id)
        return {"changed": sorted(changed_now), "left": sorted(no_longer)}

    async def membership_driven_changes(
            self, user_id: str, joined_room_ids: list[str], sharing: set[str],
            lower: Callable[[str], int], upper: Callable[[str], int],
    ) -> tuple[set[str], set[str]]:
        """Device-list changes that come from memberships, not key uploads.

        A user whose membership changed in one of our rooms between ``lower``
        and ``upper`` (per room: its persister's positions) and who shares a
        room with us now is "changed" (we may not have their keys yet); one
        who shares none any more is "left" (the spec's two lists)."""
        if not joined_room_ids:
            return set(), set()
        lows = {room: lower(room) for room in joined_room_ids}
        highs = {room: upper(room) for room in joined_room_ids}
        rows = await self.hs.stores.events.membership_changes_between(
            joined_room_ids, min(lows.values()), max(highs.values()))
        changed: set[str] = set()
        left: set[str] = set()
        memberships = self.hs.stores.memberships
        for position, room_id, member in rows:
            if member == user_id or not lows[room_id] < position <= highs[room_id]:
                continue
            if member in sharing:
                changed.add(member)
                continue
            # Not sharing a room: gone, unless only invited (or knocking) so
            # far: clients encrypt to invitees too, as Synapse lists them.
            current = await memberships.get_membership(room_id, member)
            if current is not None and current.membership in ("invite", "knock"):
                changed.add(member)
            else:
                left.add(member)
        left -= changed
        # A room we are in now but left in the window: we may have missed
        # everyone's updates meanwhile (nobody told our server while no local
        # user was there), so all its members count as changed.
        departures = await self.store.own_departures_between(
            user_id, joined_room_ids, min(lows.values()), max(highs.values()))
        rejoined = {room_id for position, room_id in departures
                    if lows[room_id] < position <= highs[room_id]}
        for room_id in rejoined:
            changed.update(m.user_id for m in await self.hs.stores.memberships.get_members(
                room_id) if m.user_id != user_id)
        return changed, left

    # -- cross-signing -----------------------------------------------------
    async def upload_cross_signing(self, requester: Requester, body: dict[str, Any],
                                   uri: str) -> None:
        user_id = requester.user_id
        existing = await self.store.get_cross_signing_keys(user_id)
        new: dict[str, tuple[str, dict[str, Any]]] = {}
        for field, key_type in CROSS_SIGNING_TYPES.items():
            key = body.get(field)
            if key is None:
                continue
            if not isinstance(key, dict):
                raise bad_json(f"{field} must be an object")
            if key.get("user_id") != user_id:
                raise _invalid(f"{field} is not for {user_id}")
            usage = key.get("usage")
            if not isinstance(usage, list) or key_type not in usage:
                raise _invalid(f"{field} must have usage {key_type!r}")
            pub = _ed25519_public_key(key)
            if pub is None:
                raise _invalid(f"{field} must have exactly one ed25519 key")
            new[key_type] = (pub, key)
        if not new:
            return
        all_same = existing.get("master") is not None and all(
            existing.get(t) == k for t, (_, k) in new.items())
        if all_same:
            return  # an idempotent retry: nothing new, no UIA needed
        if "master" in existing:
            await self.hs.auth.check_user_interactive_auth(
                requester, body, uri, "POST", "set up cross-signing keys")

        master = new.get("master") or (
            (_ed25519_public_key(existing["master"]) or "", existing["master"])
            if "master" in existing else None)
        for key_type in ("self_signing", "user_signing"):
            if key_type not in new:
                continue
            if master is None:
                raise MatrixError(400, "M_MISSING_PARAM", "No master signing key available")
            if not _verify(new[key_type][1], user_id, master[0], master[0]):
                raise MatrixError(400, "M_INVALID_SIGNATURE",
                                  f"Invalid signature on {key_type} key")
        device_ids = {d.device_id for d in await self.hs.devices.get_devices(user_id)}
        if any(pub in device_ids for pub, _ in new.values()):
            raise forbidden("A cross-signing key may not share its id with a device")
        await self.store.set_cross_signing_keys(user_id, new)
        await self.hs.devices.notify_device_change(user_id, new.get(
            "master", next(iter(new.values())))[0])

    # -- signatures --------------------------------------------------------
    async def upload_signatures(self, requester: Requester,
                                body: dict[str, Any]) -> dict[str, Any]:
        signer = requester.user_id
        failures: dict[str, dict[str, Any]] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        changed_keys: set[tuple[str, str]] = set()
        own_cross = await self.store.get_cross_signing_keys(signer)
        for target_user, objects in body.items():
            if not isinstance(objects, dict):
                raise bad_json("signatures must map users to key ids to signed objects")
            for target_key, signed in objects.items():
                try:
                    found = await self._check_signature(signer, own_cross, target_user,
                                                        target_key, signed)
                except MatrixError as e:
                    failures.setdefault(target_user, {})[target_key] = e.to_json()
                    continue
                rows.extend((target_user, target_key, signer, key_id, sig)
                            for key_id, sig in found)
                changed_keys.add((target_user, target_key))
        await self.store.add_signatures(rows)
        for user_id, key_id in sorted(changed_keys):
            # The signed device itself (or master key), so that other servers
            # get that device's keys again with the new signature.
            await self.hs.devices.notify_device_change(user_id, key_id)
        return {"failures": failures}

    async def _check_signature(self, signer: str, own_cross: dict[str, dict[str, Any]],
                               target_user: str, target_key: str, signed: Any,
                               ) -> list[tuple[str, str]]:
        """The (signer key id, signature) pairs of ``signed`` that verify."""
        def invalid(message: str) -> MatrixError:
            return MatrixError(400, "M_INVALID_SIGNATURE", message)

        if not isinstance(signed, dict):
            raise bad_json("signed object must be an object")
        sigs = (signed.get("signatures") or {}).get(signer)
        if not isinstance(sigs, dict) or not sigs:
            raise invalid("No signature by the uploader")
        if not self.hs.is_mine(target_user):
            raise MatrixError(400, "M_UNKNOWN", "Signing remote keys is not supported")

        stored: dict[str, Any] | None = None
        signing_keys: dict[str, str] = {}  # key id (after "ed25519:") -> public key
        if target_user == signer:
            device = await self.store.get_device_keys_json(signer, target_key)
            cross = {_ed25519_public_key(k): k for k in own_cross.values()}
            if device is not None:
                # One of my devices, signed by my self-signing key.
                stored = device
                ssk = own_cross.get("self_signing")
                pub = _ed25519_public_key(ssk) if ssk else None
                if pub:
                    signing_keys[pub] = pub
            elif target_key in cross and own_cross.get("master") is cross[target_key]:
                # My master key, signed by one of my devices.
                stored = cross[target_key]
                for device_id, keys in (await self.store.get_users_device_keys(
                        signer, None)).items():
                    pub = (keys.get("keys") or {}).get(f"ed25519:{device_id}")
                    if isinstance(pub, str):
                        signing_keys[device_id] = pub
            else:
                raise invalid("Unknown key")
        else:
            theirs = await self.store.get_cross_signing_keys(target_user)
            master = theirs.get("master")
            if master is None or _ed25519_public_key(master) != target_key:
                raise invalid("Can only sign another user's master key")
            stored = master
            usk = own_cross.get("user_signing")
            pub = _ed25519_public_key(usk) if usk else None
            if pub:
                signing_keys[pub] = pub
        if _strip(stored) != _strip(signed):
            raise invalid("Signed object does not match the stored key")
        found = []
        for full_id, signature in sigs.items():
            if not isinstance(full_id, str) or not full_id.startswith("ed25519:"):
                continue
            key_id = full_id.split(":", 1)[1]
            pub = signing_keys.get(key_id)
            if pub is None:
                continue
            if not _verify({**_strip(signed), "signatures": {signer: {full_id: signature}}},
                           signer, key_id, pub):
                raise invalid("Invalid signature")
            found.append((full_id, signature))
        if not found:
            raise invalid("No signature by a key that may sign this key")
        return found

    # -- devices -----------------------------------------------------------
    async def delete_device_keys(self, user_id: str, device_id: str) -> None:
        await self.store.delete_device(user_id, device_id)
