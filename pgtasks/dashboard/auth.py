"""Who may see and steer the dashboard: the `authorize` callback or HTTP basic auth, read-only
access, and CSRF protection for every state-changing request.

`Guard` is ASGI middleware around the whole dashboard, so a page, a fragment, the event stream
and an action are all behind the same check. Actions check two more things themselves
(`check_write`): the access is full, and the request carries the CSRF token of the page it came
from (a double-submit token: a SameSite=Strict cookie and the same value in a header or form field).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgtasks.core.errors import ConfigurationError

CSRF_COOKIE = "pgtasks_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
# Another site may not frame the dashboard (a framed page could be clicked through: clickjacking);
# the host app's own pages may.
_SECURITY_HEADERS = [(b"x-frame-options", b"SAMEORIGIN"),
                     (b"content-security-policy", b"frame-ancestors 'self'"),
                     (b"x-content-type-options", b"nosniff")]

AuthorizeResult = bool | Literal["read"] | None
Authorize = Callable[[Request], AuthorizeResult | Awaitable[AuthorizeResult]]


class Access(StrEnum):
    FULL = "full"  # see everything, run actions
    READ = "read"  # see everything, no actions


@dataclass(frozen=True, slots=True)
class Credential:
    """One HTTP basic auth user: `pgtasks dashboard --auth USER:PASSWORD` (full) or `--read-auth` (read)."""

    user: str
    password: str
    access: Access

    @classmethod
    def parse(cls, text: str, access: Access, *, option: str) -> Credential:
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise ConfigurationError(f"{option}: expected USER:PASSWORD with both parts non-empty, got "
                                     f"{'a value without a colon' if not sep else 'an empty user or password'}")
        return cls(user, password, access)


def basic_auth(credentials: Sequence[Credential]) -> Authorize:
    """An `authorize` callback that checks an `Authorization: Basic` header against `credentials`."""
    if not credentials:
        raise ConfigurationError("basic_auth(): give at least one Credential")

    def authorize(request: Request) -> AuthorizeResult:
        user, password = _basic(request)
        if user is None:
            return False
        granted: AuthorizeResult = False
        for c in credentials:
            # Compare every credential, in constant time each, so timing tells nothing.
            same = hmac.compare_digest(c.user.encode(), user.encode()) & hmac.compare_digest(
                c.password.encode(), (password or "").encode())
            if same and granted is False:
                granted = True if c.access is Access.FULL else "read"
                request.state.pgtasks_user = c.user
        return granted

    authorize.pgtasks_basic = True  # type: ignore[attr-defined] # a 401 then asks the browser for a login
    return authorize


def _basic(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None, None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, _, password = decoded.partition(":")
    return user, password


def who(request: Request) -> str:
    """The name an audit line gives the person behind a request: the name `authorize` established
    (basic_auth sets `request.state.pgtasks_user`; a callback of yours may too), the host app's
    authenticated user (Starlette's AuthenticationMiddleware), or else the client address. Never a
    header the client sent unchecked."""
    name = getattr(request.state, "pgtasks_user", None)
    if name:
        return str(name)
    user = request.scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return str(getattr(user, "display_name", user))
    client = request.client
    return f"anonymous@{client.host}" if client else "anonymous"


class Guard:
    """Decides each request's Access before the dashboard sees it; refuses the ones without any."""

    def __init__(self, app: ASGIApp, *, authorize: Authorize | None, read_only: bool) -> None:
        self.app = app
        self.authorize = authorize
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # the dashboard serves no websocket: refuse rather than pass it on unchecked
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        request = Request(scope)
        access = await self._access(request)
        if access is None:
            basic = getattr(self.authorize, "pgtasks_basic", False)
            response = PlainTextResponse(
                "authentication required" if basic else "not authorized for the pgtasks dashboard",
                status_code=401 if basic else 403,
                headers={"WWW-Authenticate": 'Basic realm="pgtasks", charset="UTF-8"'} if basic else None)
            await response(scope, receive, send)
            return
        token = request.cookies.get(CSRF_COOKIE) or ""
        fresh = None if _valid_token(token) else secrets.token_urlsafe(32)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["pgtasks_access"] = access
        state["pgtasks_csrf"] = fresh or token
        extra = list(_SECURITY_HEADERS)
        if fresh is not None:
            path = scope.get("root_path", "") or "/"
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            extra.append((b"set-cookie", f"{CSRF_COOKIE}={fresh}; Path={path}; SameSite=Strict; HttpOnly{secure}"
                          .encode("latin-1")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _access(self, request: Request) -> Access | None:
        if self.authorize is None:
            granted: AuthorizeResult = True
        else:
            outcome = self.authorize(request)
            granted = await outcome if inspect.isawaitable(outcome) else outcome
        if granted is True:
            return Access.READ if self.read_only else Access.FULL
        if granted == "read":
            return Access.READ
        if granted is False or granted is None:
            return None
        raise ConfigurationError(f"authorize(request) returned {granted!r}: return True (full access), "
                                 "'read' (read-only) or False (refused)")


def _valid_token(token: str) -> bool:
    return 32 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()


def access_of(request: Request) -> Access:
    access: Access = request.state.pgtasks_access
    return access


def csrf_token(request: Request) -> str:
    token: str = request.state.pgtasks_csrf
    return token


class Forbidden(Exception):
    """An action refused: read-only access, or a missing or wrong CSRF token."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def check_write(request: Request, form_token: str | None) -> None:
    """Raise Forbidden unless this request may change state: full access and a matching CSRF token."""
    if access_of(request) is not Access.FULL:
        raise Forbidden("read-only access: actions are switched off for you")
    # The token alone would let a sibling subdomain that can plant the cookie act; the browser's
    # own account of where the request comes from closes that.
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden(f"request from another site refused (Sec-Fetch-Site: {request.headers['sec-fetch-site']})")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Forbidden(f"request from origin {origin} refused: the dashboard is at {request.headers.get('host')!r} "
                        "(a proxy in front must pass the Host header on)")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
