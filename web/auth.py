"""Who is calling, and may they: HTTP Basic for the REST API, the login form for the Gradio UI.

Both check passwords with `db.users.authenticate` (bcrypt, whose `checkpw` compares in constant
time). Roles (db.models.Role): admin and trainer may create datasets and jobs; labeler may only
label and chat. The role rules live in `web.services.access` (`require`, `can`), so the API and the
UI enforce the same thing; this module turns a refusal into an HTTP 403 for the API.

Why a verified-credentials cache: HTTP Basic sends the password with every request, and bcrypt
costs a fifth of a second of CPU by design. A UI or script polling the job list every second would
spend a core on hashing alone. So after one successful bcrypt check we remember an HMAC of the
password (keyed with a random per-process secret, never the password itself) together with the
user's current password hash, for a few minutes. A later request with the same password matches the
HMAC (compared with `hmac.compare_digest`, constant time); a changed password hash in the database
(password reset) or an expired entry sends the check back to bcrypt.

Failed logins are throttled per account and per address (`web.login_throttle`, the app's
`app.state.login_throttle`) before any check runs: a locked attempt gets 429 with Retry-After, from
the API and from the login form alike, and costs no bcrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy.orm import Session

from db.models import User
from db.session import WEB_LOCK_TIMEOUT_SECONDS, SessionLocal, session_scope
from db.settings import Settings, get_settings
from db.users import user_named
from web import services
from web.login_throttle import LoginThrottle, LoginThrottled
from web.security import client_address

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


async def get_db_session(request: Request) -> AsyncIterator[Session]:
    """One session per request on this process's engine for the app's database URL.

    Services commit their own changes; anything left uncommitted (a read, an error) is rolled
    back when the request ends. Its statements wait WEB_LOCK_TIMEOUT_SECONDS at most for another
    writer's lock; then the request is answered 503 (web/api/errors.py).

    Async, because FastAPI runs every sync dependency in a pool thread, and each such hop costs a
    request a thread and the GIL again under load (bench/bench_labeling.py measures it). Making a
    session touches no database (it connects at its first statement, in the route's thread), so it is
    made here on the event loop. Closing it gives the connection back to the pool with a rollback, which
    waits on the database, so that runs in a thread: one outside the pool's limit of threads (as FastAPI
    does for a sync dependency's exit), because requests queued for those threads may be waiting for this
    very connection; and shielded, so a request cancelled by a client that went away still gives it back.
    A session whose last transaction was committed already gave its connection back (SQLAlchemy returns it
    at commit) and is closed on the event loop: a labeling request, which ends with a commit, goes to the
    pool twice instead of three times.
    """
    session = SessionLocal(get_app_settings(request).database_url, lock_timeout_seconds=WEB_LOCK_TIMEOUT_SECONDS)
    try:
        yield session
    finally:
        if not session.in_transaction():
            session.close()  # it holds no connection (a commit gave it back): nothing to wait for
        else:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))


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


def check_password(session: Session, name: str, password: str, throttle: LoginThrottle | None = None,
                   address: str | None = None) -> User | None:
    """The user if `name`/`password` are right, else None (bcrypt on a cache miss).

    With a `throttle`, raises LoginThrottled (before checking anything) when the account or `address`
    (default: the current request's client) has failed too often, and reports the outcome to it.
    """
    if not name or not password:
        return None
    if throttle is None:
        return _cached_user(session, name, password) or _bcrypt_user(session, name, password)
    address = address or client_address.get()
    throttle.check(name, address)
    user = _cached_user(session, name, password)
    if user is not None:
        throttle.succeeded(name, address)
        return user
    with throttle.attempt(name, address) as attempt:
        # A parallel request may have warmed the cache while this one waited for its turn.
        user = _cached_user(session, name, password) or _bcrypt_user(session, name, password)
        attempt.done(user is not None)
    return user


def _cached_user(session: Session, name: str, password: str) -> User | None:
    """The user if `password` matches a recent successful login of theirs (no bcrypt), else None."""
    user = user_named(session, name)
    # A disabled account skips the cache: authenticate() refuses it even if it logged in a minute ago.
    if user is not None and not user.disabled and verified_credentials.matches(user, password):
        return user
    return None


def _bcrypt_user(session: Session, name: str, password: str) -> User | None:
    from db.users import authenticate

    # authenticate() runs bcrypt even for unknown names, so timing does not reveal who exists.
    user = authenticate(session, name, password)
    if user is not None:
        verified_credentials.remember(user, password)
    return user


# ----------------------------------------------------------------------------- REST API


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=message,
                         headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


def too_many_attempts(error: LoginThrottled) -> HTTPException:
    """The 429 answer to a throttled login (API and login form)."""
    return HTTPException(status_code=status.HTTP_429_TOO_MANY_REQUESTS, detail=str(error),
                         headers={"Retry-After": str(error.retry_after)})


def get_login_throttle(request: Request) -> LoginThrottle | None:
    """The app's login throttle (None for an app built without `web.app.create_app`)."""
    return getattr(request.app.state, "login_throttle", None)


async def _request_login_throttle(request: Request) -> LoginThrottle | None:
    """`get_login_throttle` as a dependency: async, so it runs on the event loop, not in a pool thread."""
    return get_login_throttle(request)


def current_user(credentials: Annotated[HTTPBasicCredentials | None, Depends(basic_security)],
                 session: Annotated[Session, Depends(get_db_session)],
                 throttle: Annotated[LoginThrottle | None, Depends(_request_login_throttle)]) -> User:
    """The logged-in user of an API request (a sync dependency: FastAPI runs bcrypt in its thread pool)."""
    if credentials is None:
        raise _unauthorized("authentication required: send HTTP Basic credentials (user name and password)")
    try:
        user = check_password(session, credentials.username, credentials.password, throttle)
    except LoginThrottled as error:
        raise too_many_attempts(error) from None
    if user is None:
        raise _unauthorized("wrong user name or password")
    return user


def user_allowed_to(action: services.Action):
    """A dependency: the logged-in user if their role allows `action`, else 403 (before any body is used)."""
    def dependency(user: Annotated[User, Depends(current_user)]) -> User:
        try:
            services.require(user, action)
        except services.PermissionDenied as error:
            raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=error.message) from None
        return user

    return dependency


CurrentUser = Annotated[User, Depends(current_user)]
WriterUser = Annotated[User, Depends(user_allowed_to(services.Action.write))]
AdminUser = Annotated[User, Depends(user_allowed_to(services.Action.manage_models))]


# ----------------------------------------------------------------------------- Gradio UI


class SessionsOfEnabledUsers(dict):
    """Gradio's table of UI sessions (cookie token -> user name) that forgets every session of a user who is
    disabled (or deleted), whichever process disabled them (the Admin tab, the API, `workbench users disable`).

    Gradio resolves each request's cookie with `tokens.get(token)` (its `get_current_user`, behind every UI
    route), so a token whose user is no longer enabled resolves to nobody: the next request of that browser
    is a logged-out one. Whether a user is enabled is read from the database at most every
    `RECHECK_SECONDS` per user (the UI sends many requests a second while it is used).
    """

    RECHECK_SECONDS = 2.0

    def __init__(self, database_url: str):
        super().__init__()
        self.database_url = database_url
        self._checked: dict[str, tuple[float, bool]] = {}  # name -> (monotonic time, enabled)
        self._lock = threading.Lock()

    def get(self, token, default=None):
        name = super().get(token, default)
        if name is None or name is default or self._enabled(name):
            return name
        with self._lock:
            for other in [t for t, user in self.items() if user == name]:
                self.pop(other, None)
        return default

    def _enabled(self, name: str) -> bool:
        now = time.monotonic()
        checked = self._checked.get(name)
        if checked is not None and now - checked[0] < self.RECHECK_SECONDS:
            return checked[1]
        try:
            with session_scope(self.database_url) as session:
                user = user_named(session, name)
                enabled = user is not None and not user.disabled
        except Exception:  # a database that cannot answer now: keep the last answer, else let it be
            return checked[1] if checked is not None else True
        self._checked[name] = (now, enabled)
        return enabled


def gradio_login(settings: Settings, throttle: LoginThrottle | None = None):
    """The `auth=` callable for `gr.mount_gradio_app`: (username, password) -> bool.

    Async on purpose: Gradio awaits a coroutine function but calls a plain one directly on the
    event loop, where a bcrypt check would freeze every other request for its duration. Here the
    check runs in a worker thread. After login Gradio puts the name in `request.username`.

    A throttled attempt raises the 429 HTTPException, which Gradio's /login route passes on (its form
    then says "incorrect credentials", the only failure it knows; the status and Retry-After are for
    anything else that reads the answer). Gradio hands the callable no request, so the address comes
    from `web.security.client_address`, set for each request by the app's middleware.
    """
    async def login(username: str, password: str) -> bool:
        address = client_address.get()

        def check() -> bool:
            with session_scope(settings.database_url) as session:
                return check_password(session, (username or "").strip(), password or "", throttle,
                                      address) is not None

        try:
            return await anyio.to_thread.run_sync(check)
        except LoginThrottled as error:
            raise too_many_attempts(error) from None

    return login
