"""Logins: the body's fields, the failed-login limit, bounded password checks, the token. No CherryPy.

``eventbus.netapi.app``'s ``/login`` route only reads the body and writes the answer (cookie, JSON); every
decision is here. scrypt runs on ``CONCURRENT_CHECKS`` dedicated threads only: glibc keeps a check's
16 MiB in the arena of the thread that ran it. The rules: docs/api.md, Hostile clients (Logins).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventbus.config import ApiConfig
from eventbus.errors import ApiError, TooManyRequestsError
from eventbus.netapi import auth, hooks, limits
from eventbus.netapi.auth import Backend, TokenSigner

log = logging.getLogger(__name__)

# Bytes of a /login body; anything larger is not a login.
LOGIN_BODY_LIMIT = 16 * 1024
CONCURRENT_CHECKS = 2
FAILED = "authentication failed: wrong user name or password"


@dataclass(frozen=True)
class Session:
    """A successful login: Salt's token record."""

    token: str
    start: float
    expire: float
    user: str
    eauth: str
    perms: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {"token": self.token, "start": self.start, "expire": self.expire, "user": self.user,
                "eauth": self.eauth, "perms": list(self.perms)}


class Logins:
    """Checks logins for the ``/login`` route; ``close()`` ends the check threads."""

    def __init__(self, settings: ApiConfig, backends: dict[str, Backend], signer: TokenSigner,
                 complaints: Any) -> None:
        self.settings = settings
        self.backends = backends
        self.signer = signer
        self.complaints = complaints
        self.guard = limits.LoginGuard(settings.login_rate)
        self.quiet = limits.OncePerInterval()
        self.checks = ThreadPoolExecutor(CONCURRENT_CHECKS, thread_name_prefix="password-check")

    def attempt(self, address: str, raw: bytes, content_type: str | None) -> Session:
        """The session of a good login from ``address``, else ``ApiError`` (400, 401, 429)."""
        username, password, eauth = self.fields(raw, content_type)
        wait = self.guard.begin(address)
        if wait:
            held_back = self.quiet.check(("429", address))
            if held_back is not None:
                log.warning("refused logins from %s for %.0f s: over %d failed logins in a minute%s", address, wait,
                            self.settings.login_rate,
                            f" ({held_back} more like it in the last minute)" if held_back else "")
            raise TooManyRequestsError(f"too many failed logins from {address}; retry in {wait:.0f} s",
                                       retry_after=int(wait + 0.999))
        backend = self.backends.get(eauth)
        known = backend is not None and username in backend.perms
        stored = auth.read_users(backend.users_file).get(username) if known else None  # type: ignore[union-attr]
        success = False
        try:
            # An unknown user costs the same check (``stored`` None), so the answer takes as long.
            success = self.checks.submit(auth.verify_password, password, stored).result()
        finally:
            self.guard.end(address, success)
        if not success or backend is None:
            self.complaints.refuse("login", f"login failed for user {username[:64]!r} (eauth {eauth[:20]!r}) "
                                            f"from {address}")
            raise ApiError(401, FAILED)
        token, start, expire = self.signer.issue(username, eauth, self.settings.token_expire)
        log.info("user %r logged in (eauth %s) from %s", username, eauth, address)
        return Session(token, start, expire, username, eauth, backend.perms[username])

    def fields(self, raw: bytes, content_type: str | None) -> tuple[str, str, str]:
        """(username, password, eauth) of a login body (JSON, form, or Salt's one-element lowstate list)."""
        body = hooks.parse_body(raw, content_type)
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        if not isinstance(body, dict):
            raise ApiError(400, "the login body must be a mapping with username, password and eauth")
        username, password = body.get("username"), body.get("password")
        eauth = body.get("eauth") or (next(iter(self.backends)) if len(self.backends) == 1 else None)
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise ApiError(400, "the login body needs username and password strings")
        if not isinstance(eauth, str):
            raise ApiError(400, "the login body needs eauth (one of: "
                                f"{', '.join(self.backends) or 'none configured'})")
        return username, password, eauth

    def close(self) -> None:
        """Let the check threads end (CherryPy's engine waits for every thread when it stops)."""
        self.checks.shutdown(wait=False, cancel_futures=True)
