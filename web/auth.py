"""Who is calling, and may they: HTTP Basic for the REST API, the login form for the Gradio UI.

Both check passwords with `db.users.authenticate` (bcrypt, whose `checkpw` compares in constant
time). Roles (db.models.Role): admin and trainer may create datasets and jobs; labeler may only
label and chat. The role rule itself lives in `web.services.require_writer`, so the API and the UI
enforce the same thing; this module turns its refusal into an HTTP 403 for the API.

Why a verified-credentials cache: HTTP Basic sends the password with every request, and bcrypt
costs a fifth of a second of CPU by design. A UI or script polling the job list every second would
spend a core on hashing alone. So after one successful bcrypt check we remember an HMAC of the
password (keyed with a random per-process secret, never the password itself) together with the
user's current password hash, for a few minutes. A later request with the same password matches the
HMAC (compared with `hmac.compare_digest`, constant time); a changed password hash in the database
(password reset) or an expired entry sends the check back to bcrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import User
from db.session import SessionLocal, session_scope
from db.settings import Settings, get_settings
from web import services

REALM = "LLM Workbench"
CACHE_SECONDS = 300.0

# auto_error=False: we raise the 401 ourselves, with a message and the WWW-Authenticate header.
basic_security = HTTPBasic(auto_error=False, realm=REALM,
                           description="HTTP Basic with a workbench user name and password.")


# ----------------------------------------------------------------------------- request dependencies


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (tests build apps with their own)."""
    settings = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


def get_db_session(settings: Annotated[Settings, Depends(get_app_settings)]) -> Iterator[Session]:
    """One session per request on this process's engine for the app's database URL.

    Services commit their own changes; anything left uncommitted (a read, an error) is rolled
    back when the request ends.
    """
    session = SessionLocal(settings.database_url)
    try:
        yield session
    finally:
        session.close()


# ----------------------------------------------------------------------------- password checks


@dataclass
class _Verified:
    password_mac: bytes
    password_hash: str
    expires_at: float


class VerifiedCredentials:
    """Remembers recent successful logins as HMACs, so bcrypt runs once per user per few minutes."""

    def __init__(self, ttl_seconds: float = CACHE_SECONDS):
        self.ttl_seconds = ttl_seconds
        self._key = secrets.token_bytes(32)
        self._entries: dict[str, _Verified] = {}
        self._lock = threading.Lock()

    def _mac(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()

    def matches(self, user: User, password: str) -> bool:
        with self._lock:
            entry = self._entries.get(user.name)
        if entry is None or entry.expires_at < time.monotonic() or entry.password_hash != user.password_hash:
            return False
        return hmac.compare_digest(entry.password_mac, self._mac(user.name, password))

    def remember(self, user: User, password: str) -> None:
        entry = _Verified(self._mac(user.name, password), user.password_hash, time.monotonic() + self.ttl_seconds)
        with self._lock:
            self._entries[user.name] = entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verified_credentials = VerifiedCredentials()


def check_password(session: Session, name: str, password: str) -> User | None:
    """The user if `name`/`password` are right, else None (bcrypt on a cache miss)."""
    from db.users import authenticate

    if not name or not password:
        return None
    user = session.scalar(select(User).where(User.name == name))
    if user is not None and verified_credentials.matches(user, password):
        return user
    # authenticate() runs bcrypt even for unknown names, so timing does not reveal who exists.
    user = authenticate(session, name, password)
    if user is not None:
        verified_credentials.remember(user, password)
    return user


# ----------------------------------------------------------------------------- REST API


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=message,
                         headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


def current_user(credentials: Annotated[HTTPBasicCredentials | None, Depends(basic_security)],
                 session: Annotated[Session, Depends(get_db_session)]) -> User:
    """The logged-in user of an API request (a sync dependency: FastAPI runs bcrypt in its thread pool)."""
    if credentials is None:
        raise _unauthorized("authentication required: send HTTP Basic credentials (user name and password)")
    user = check_password(session, credentials.username, credentials.password)
    if user is None:
        raise _unauthorized("wrong user name or password")
    return user


def writer_user(user: Annotated[User, Depends(current_user)]) -> User:
    """An admin or trainer; labelers get 403 before any upload is stored."""
    try:
        services.require_writer(user, "upload datasets, submit, cancel or resume jobs")
    except services.PermissionDenied as error:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=error.message) from None
    return user


CurrentUser = Annotated[User, Depends(current_user)]
WriterUser = Annotated[User, Depends(writer_user)]


# ----------------------------------------------------------------------------- Gradio UI


def gradio_login(settings: Settings):
    """The `auth=` callable for `gr.mount_gradio_app`: (username, password) -> bool.

    Async on purpose: Gradio awaits a coroutine function but calls a plain one directly on the
    event loop, where a bcrypt check would freeze every other request for its duration. Here the
    check runs in a worker thread. After login Gradio puts the name in `request.username`.
    """
    async def login(username: str, password: str) -> bool:
        def check() -> bool:
            with session_scope(settings.database_url) as session:
                return check_password(session, (username or "").strip(), password or "") is not None

        return await anyio.to_thread.run_sync(check)

    return login
