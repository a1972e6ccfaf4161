"""User-interactive authentication (UIA): flows, stages and sessions.

A session lives in the database (any process of a fleet may continue it) and
is pinned to the request that started it: the same method and path, and the
same body apart from ``auth`` (the spec has the client "resubmit the same
request with the addition of an ``auth`` key"). A later stage whose body
differs is refused; one that carries only ``auth`` continues the original
request (registration keeps its parameters in the session for that).
Secrets (passwords) are left out of the pin so that no digest of them is
stored; registration keeps only the bcrypt hash.

Stages offered: ``m.login.dummy``, ``m.login.password`` (for the requester's
own account only: proving another user's password is 403 ``M_FORBIDDEN``)
``m.login.registration_token`` and ``m.login.email.identity`` (the
``threepid_creds`` of a session validated by an emailed link; the proven
address is kept in the session's ``threepid`` param).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from myelin.domain import MatrixError, Requester
from myelin.storage.stores.accounts import now_ms

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# Body keys left out of a session's pin: secrets we never store a digest of.
SECRET_KEYS = frozenset({"password", "new_password"})
SESSION_LIFETIME_MS = 24 * 3600 * 1000

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"
EMAIL_IDENTITY = "m.login.email.identity"


def request_digest(content: dict[str, Any]) -> str:
    """The pin of a request body (without ``auth`` and secrets)."""
    pinned = {k: v for k, v in content.items() if k != "auth" and k not in SECRET_KEYS}
    return hashlib.sha256(orjson.dumps(pinned, option=orjson.OPT_SORT_KEYS)).hexdigest()


def has_pinned_content(body: dict[str, Any]) -> bool:
    return any(k != "auth" and k not in SECRET_KEYS for k in body)


@dataclass
class UIASession:
    session_id: str
    completed: list[str]
    params: dict[str, Any]
    new: bool

    def flow_done(self, flows: list[list[str]]) -> bool:
        return any(all(stage in self.completed for stage in flow) for flow in flows)


class UserInteractiveAuth:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.accounts

    async def load(self, body: dict[str, Any]) -> UIASession | None:
        """The session ``body.auth.session`` names, if it exists."""
        auth = body.get("auth")
        session_id = auth.get("session") if isinstance(auth, dict) else None
        if not isinstance(session_id, str) or not session_id:
            return None
        stored = await self.store.get_uia_session(session_id)
        if stored is None:
            return None
        _, _, completed, params = stored
        return UIASession(session_id, completed, params, new=False)

    async def authenticate(self, *, flows: list[list[str]], body: dict[str, Any], uri: str,
                           method: str, description: str, requester: Requester | None,
                           params: dict[str, Any] | None = None) -> UIASession:
        """Run one round of UIA; returns the session once a flow is complete,
        raises the 401 challenge (or an error) otherwise. ``params`` are merged
        into the session's stored data (kept across stages)."""
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth must be an object")
        session_id = auth.get("session") if auth else None
        if session_id is not None and not isinstance(session_id, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.session must be a string")
        if session_id:
            session = await self._continue(session_id, body, uri, method, requester)
        else:
            session = await self._start(body, uri, method, description, requester)
        if params:
            session.params.update(params)
        if not auth or auth.get("type") is None:
            if session.flow_done(flows):
                await self._save(session)
                return session
            await self._save(session)
            raise self.challenge(flows, session)
        stage = auth.get("type")
        if not isinstance(stage, str) or not any(stage in flow for flow in flows):
            await self._save(session)
            raise self.challenge(flows, session, "M_UNRECOGNIZED",
                                 "Unsupported authentication type")
        if stage not in session.completed:
            await self._check_stage(stage, auth, flows, session, requester)
            session.completed.append(stage)
        await self._save(session)
        if session.flow_done(flows):
            return session
        raise self.challenge(flows, session)

    async def finish(self, session: UIASession) -> None:
        """Forget a session whose request succeeded (it cannot be replayed)."""
        await self.store.delete_uia_session(session.session_id)

    async def save(self, session: UIASession) -> None:
        await self._save(session)

    # -- internals -----------------------------------------------------------
    async def _start(self, body: dict[str, Any], uri: str, method: str, description: str,
                     requester: Requester | None) -> UIASession:
        await self.store.delete_old_uia_sessions(now_ms() - SESSION_LIFETIME_MS)
        session_id = secrets.token_urlsafe(18)
        params: dict[str, Any] = {
            "digest": request_digest(body), "description": description,
            "user_id": requester.user_id if requester else None}
        await self.store.create_uia_session(session_id, uri, method, params)
        return UIASession(session_id, [], params, new=True)

    async def _continue(self, session_id: str, body: dict[str, Any], uri: str, method: str,
                        requester: Requester | None) -> UIASession:
        stored = await self.store.get_uia_session(session_id)
        if stored is None:
            raise MatrixError(400, "M_UNKNOWN", "Unknown UI authentication session")
        s_uri, s_method, completed, params = stored
        changed = MatrixError(403, "M_FORBIDDEN", "Requested operation has changed during "
                                                  "the UI authentication session.")
        if (s_uri, s_method) != (uri, method):
            raise changed
        if has_pinned_content(body) and request_digest(body) != params.get("digest"):
            raise changed
        if requester is not None and params.get("user_id") != requester.user_id:
            raise changed
        return UIASession(session_id, completed, params, new=False)

    async def _save(self, session: UIASession) -> None:
        await self.store.update_uia_session(session.session_id, session.completed,
                                            session.params)

    def challenge(self, flows: list[list[str]], session: UIASession,
                  errcode: str | None = None, error: str | None = None) -> MatrixError:
        """The 401 that tells the client what is left to do."""
        extra: dict[str, Any] = {"flows": [{"stages": f} for f in flows], "params": {},
                                 "session": session.session_id,
                                 "completed": list(session.completed)}
        if errcode is None:
            return MatrixError(401, "M_UNAUTHORIZED", "Additional authentication required",
                               **extra)
        return MatrixError(401, errcode, error or "Authentication failed", **extra)

    async def _check_stage(self, stage: str, auth: dict[str, Any], flows: list[list[str]],
                           session: UIASession, requester: Requester | None) -> None:
        if stage == DUMMY:
            return
        if stage == PASSWORD:
            await self._check_password(auth, flows, session, requester)
            return
        if stage == REGISTRATION_TOKEN:
            token = auth.get("token")
            tokens = self.hs.stores.registration_tokens
            if not isinstance(token, str) or not await tokens.take_pending_use(token):
                raise self.challenge(flows, session, "M_UNAUTHORIZED",
                                     "Invalid registration token")
            session.params["registration_token"] = token
            return
        if stage == EMAIL_IDENTITY:
            creds = auth.get("threepid_creds", auth.get("threepidCreds"))
            validated = None
            if isinstance(creds, dict):
                validated = await self.hs.threepids.validated(creds.get("sid"),
                                                              creds.get("client_secret"))
            if validated is None or validated[0] != "email":
                raise self.challenge(flows, session, "M_UNAUTHORIZED",
                                     "Unable to get a validated email address")
            session.params["threepid"] = {"medium": validated[0], "address": validated[1]}
            return
        raise self.challenge(flows, session, "M_UNRECOGNIZED", "Unsupported authentication type")

    async def _check_password(self, auth: dict[str, Any], flows: list[list[str]],
                              session: UIASession, requester: Requester | None) -> None:
        user_id = await self.hs.auth.user_id_from_identifier(auth)
        if user_id is None and requester is not None:
            user_id = requester.user_id
        if user_id is None:
            raise self.challenge(flows, session, "M_FORBIDDEN", "Invalid password")
        if requester is not None and user_id != requester.user_id:
            # Not a wrong password: this is someone else's account.
            raise MatrixError(403, "M_FORBIDDEN",
                              "You can only authenticate as the user making the request")
        password = auth.get("password")
        if not isinstance(password, str) or not await self.hs.auth.validate_login(
                user_id, password):
            raise self.challenge(flows, session, "M_FORBIDDEN", "Invalid password")
        session.params["authenticated_user_id"] = user_id
