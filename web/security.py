"""Cross-site request protection for the whole app (API and Gradio UI): one pure ASGI middleware.

What it enforces, for every HTTP request and websocket of the app, mounted Gradio routes included:

- Cross-origin writes are refused. A POST/PUT/PATCH/DELETE (or a websocket) whose ``Origin`` header
  (or, without one, the origin of its ``Referer``) is neither the app's own origin nor one of
  ``WORKBENCH_ALLOWED_ORIGINS`` gets 403 before any route runs. The app's own origin is the request's
  ``Host`` header (what the browser addressed; a reverse proxy must pass it on, as nginx's
  ``proxy_set_header Host $host`` does) when that host is one of ``WORKBENCH_PUBLIC_HOSTS`` (default: this
  machine's names and addresses): a page of another domain that its owner points at this machine's address
  (DNS rebinding) sends its own name as both Host and Origin, and must not pass as the app. ``Origin: null`` (sandboxed frames, some redirects) counts as
  foreign. Requests with neither header come from scripts and curl, not from a browser page, and pass:
  a browser always sends ``Origin`` on a cross-origin POST. A browser's ``Sec-Fetch-Site: cross-site``
  (or ``same-site``: a sibling host) refuses the request too, unless its origin is allowed.
- Gradio's ``GET /logout`` changes state (it ends every session of the user), and a GET can be sent by
  another site with an ``<img src>`` or a link (its cookie is ``SameSite=Lax``, which a top-level
  navigation carries). Gradio 6 offers no other logout route, so that GET is judged like a write:
  refused when ``Sec-Fetch-Site`` says another site sent it, or when its ``Referer`` is foreign. The
  app's own "log out" link sends ``Sec-Fetch-Site: same-origin``; a typed address or a bookmark ``none``.
- Every answer says it may be framed only by the app itself (``Content-Security-Policy: frame-ancestors
  'self'`` and ``X-Frame-Options: SAMEORIGIN``): no other site can overlay the Label tab's buttons.
- Cookies the app sets are ``SameSite=Lax`` (Gradio sets its login cookie ``SameSite=None``, which a
  cross-site page's requests would carry), and ``Secure`` when the request came over https: the scheme
  uvicorn saw, an ``X-Forwarded-Proto: https`` from a TLS proxy, or ``WORKBENCH_SECURE_COOKIES``.

CORS itself (which origins may *read* answers) is Starlette's ``CORSMiddleware`` with the same allowed
list, added by `install`; its presence also makes Gradio's own CORS middleware step aside (Gradio echoes
any Origin with credentials allowed when the host is not localhost).

The client's address of each request is published in `client_address` (a context variable), for the
login throttle of the Gradio form, whose auth callable receives only the name and password.
"""

from __future__ import annotations

import contextvars
import json
import logging
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.settings import Settings

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# GET routes that change state anyway (the last path segment): Gradio's logout.
STATE_CHANGING_GETS = frozenset({"logout"})
OTHER_SITES = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values naming another site
FRAME_POLICY = "frame-ancestors 'self'"
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}

client_address: contextvars.ContextVar[str] = contextvars.ContextVar("client_address", default="unknown")


def install(app: FastAPI, settings: Settings) -> None:
    """Add the CORS policy and the cross-site guard to `app` (call before it serves its first request)."""
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins), allow_credentials=True,
                       allow_methods=["*"], allow_headers=["*"])
    # Added last, so it is the outermost layer: a refused request reaches neither CORS nor a route.
    app.add_middleware(CrossSiteGuard, allowed_origins=settings.allowed_origins,
                       always_secure=settings.secure_cookies, public_hosts=settings.public_hosts)


def _netloc(scheme: str, host_and_port: str) -> str:
    """host[:port] in lower case, without the scheme's default port."""
    netloc = host_and_port.strip().lower()
    for default in (DEFAULT_PORTS.get(scheme), "80", "443"):
        if default and netloc.endswith(f":{default}") and not netloc.endswith("]"):
            return netloc[: -len(default) - 1]
    return netloc


def request_origin(headers: Headers) -> str | None:
    """The origin a browser says the request comes from: Origin, else Referer's, else None."""
    origin = headers.get("origin")
    if origin is not None:
        return origin.strip().lower().rstrip("/")
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer.strip())
        return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else "null"
    return None


def is_same_origin(origin: str, headers: Headers, public_hosts: frozenset[str]) -> bool:
    """Whether `origin` names the host this request was sent to (ports normalized, any http(s) scheme:
    a TLS proxy in front may make the app see http while the browser used https) and that host is one of
    the app's public names."""
    parts = urlsplit(origin)
    host = headers.get("host")
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or not host:
        return False
    return (_netloc(parts.scheme, parts.netloc) == _netloc(parts.scheme, host)
            and (parts.hostname or "").lower() in public_hosts)


def is_https(scope: Scope, headers: Headers) -> bool:
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return scope.get("scheme") in ("https", "wss") or forwarded == "https"


def changes_state(scope: Scope) -> bool:
    """Whether an HTTP request may change something: an unsafe method, or a GET/HEAD of a state-changing route."""
    if scope["method"] in UNSAFE_METHODS:
        return True
    return scope["method"] in ("GET", "HEAD") and scope["path"].rstrip("/").rsplit("/", 1)[-1] in STATE_CHANGING_GETS


def _lax_cookie(cookie: str, secure: bool) -> str:
    """A Set-Cookie value with SameSite=Lax instead of whatever it had, and Secure when asked."""
    attributes = [part.strip() for part in cookie.split(";")]
    kept = [attributes[0]] + [a for a in attributes[1:] if a and not a.lower().startswith("samesite")]
    kept.append("SameSite=lax")
    if secure and not any(a.lower() == "secure" for a in kept):
        kept.append("Secure")
    return "; ".join(kept)


class CrossSiteGuard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...] = (), always_secure: bool = False,
                 public_hosts: tuple[str, ...] = ()):
        self.app = app
        self.allowed_origins = frozenset(allowed_origins)
        self.always_secure = always_secure
        self.public_hosts = frozenset(host.lower() for host in public_hosts)

    def _foreign_origin(self, scope: Scope, headers: Headers) -> str | None:
        """Where the request comes from if it changes state (a write, a websocket, a state-changing GET)
        and comes from another site, else None."""
        if scope["type"] == "http" and not changes_state(scope):
            return None
        origin = request_origin(headers)
        if origin is not None and (origin in self.allowed_origins
                                   or is_same_origin(origin, headers, self.public_hosts)):
            return None
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        if fetch_site in OTHER_SITES:
            return origin or f"(a {fetch_site} page that sent no Referer)"
        return origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client = scope.get("client")
        token = client_address.set(client[0] if client else "unknown")
        try:
            foreign = self._foreign_origin(scope, headers)
            if foreign is not None:
                await self._refuse(scope, receive, send, foreign, headers)
                return
            secure = self.always_secure or is_https(scope, headers)

            async def send_with_lax_cookies(message: Message) -> None:
                if message["type"] == "http.response.start":
                    mutable = MutableHeaders(scope=message)
                    mutable["content-security-policy"] = FRAME_POLICY
                    mutable["x-frame-options"] = "SAMEORIGIN"
                    cookies = mutable.getlist("set-cookie")
                    if cookies:
                        del mutable["set-cookie"]
                        for cookie in cookies:
                            mutable.append("set-cookie", _lax_cookie(cookie, secure))
                await send(message)

            await self.app(scope, receive, send_with_lax_cookies)
        finally:
            client_address.reset(token)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, origin: str, headers: Headers) -> None:
        log.warning("refused a cross-site %s %s from origin %s (host %s, address %s)",
                    scope.get("method", "websocket"), scope.get("path"), origin, headers.get("host"),
                    client_address.get())
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": f"cross-site request refused: origin {origin} may not change anything here; "
                                     "an administrator can allow it with WORKBENCH_ALLOWED_ORIGINS (another site) "
                                     "or WORKBENCH_PUBLIC_HOSTS (a name of this app)"}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
