"""Users, passwords, login tokens and what each caller may see. No sockets, no CherryPy.

Password hashes are scrypt with their parameters and salt in the line; login tokens are HS256 JWTs signed
with a key in a 0600 file under ``root_dir``, not stored (docs/api.md, Users and login). A ``Principal`` is
whoever made a request, with the filter deciding which events it may see.
"""
from __future__ import annotations

import base64
import fnmatch
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import jwt

from eventbus import config
from eventbus.config import AuthBackend
from eventbus.errors import AuthenticationError, ConfigError, InvalidArgumentError

# scrypt cost: 16 MiB of memory and ~40 ms per check on a small server core.
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
TOKEN_ALGORITHM = "HS256"
USER_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")

# Events a principal may see: (tag, data id) -> bool; None means every event.
EventFilter = Callable[[str, Any], bool]


# -- passwords -----------------------------------------------------------------------

def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The stored form of ``password``: ``scrypt$n$r$p$salt$hash`` (salt and hash base64)."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=32)


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; as slow for an unknown user (``None``) as a known one."""
    try:
        scheme, n, r, p, salt, digest = (stored or _dummy_hash()).split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        wanted = _unb64(digest)
        got = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        got, wanted = b"\x00", b"\x01"
    return hmac.compare_digest(got, wanted) and stored is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def prepare() -> None:
    """Make the dummy hash now (at API start), so the first unknown user's login costs no extra scrypt."""
    _dummy_hash()


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked instead of a missing user's hash, so an unknown name costs the same scrypt (made on first use)."""
    return hash_password(secrets.token_hex(8))


# -- the users file --------------------------------------------------------------------

def check_user_name(name: str) -> str:
    """``name`` if it can be a user name, else ``InvalidArgumentError`` (a ``ValueError``) saying what is allowed."""
    if not USER_NAME.match(name):
        raise InvalidArgumentError(f"user name {name[:80]!r} must be 1-64 letters, digits or _.@+-",
                                   argument="user name", value=name)
    return name


def read_users(path: Path) -> dict[str, str]:
    """``{name: hash}`` of a users file; an absent file has no users. A line that is not UTF-8 (an edit
    in another encoding) names no user it can match; the other lines still count."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    users = {}
    for line in text.splitlines():
        name, sep, stored = line.strip().partition(":")
        if sep and name and not name.startswith("#"):
            users[name] = stored
    return users


def write_user(path: Path, name: str, password: str) -> None:
    """Add or replace ``name`` in the users file, written atomically with mode 0600."""
    check_user_name(name)
    if not password:
        raise InvalidArgumentError("the password is empty", argument="password")
    users = read_users(path)
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(f"{user}:{stored}\n" for user, stored in users.items()))
    os.replace(temporary, path)
    os.chmod(path, 0o600)


# -- external_auth ------------------------------------------------------------------------

# The backends are typed and checked with the rest of the config (eventbus.config).
Backend = AuthBackend


def read_external_auth(external_auth: Mapping[str, Any], root_dir: Path, source: str = "api") -> dict[str, Backend]:
    """The backends of an ``ApiConfig.external_auth`` (already typed), or of a raw mapping, checked."""
    return config.external_auth(external_auth, root_dir, source)


def tag_filter(globs: tuple[str, ...]) -> EventFilter | None:
    """The filter of a user's tag globs; ``None`` (no check per event) when one is ``*``."""
    if "*" in globs:
        return None
    pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs) or "(?!)")
    match = pattern.match
    return lambda tag, _id: match(tag) is not None


def both(first: EventFilter | None, second: EventFilter | None) -> EventFilter | None:
    """A filter passing what both pass (``None`` being "everything")."""
    if first is None:
        return second
    if second is None:
        return first
    return lambda tag, event_id: first(tag, event_id) and second(tag, event_id)


# -- tokens ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who made a request: user, how they proved it, until when, and what they may see."""

    user: str
    eauth: str
    start: float
    expire: float
    perms: tuple[str, ...]
    accepts: EventFilter | None
    # Principals with equal ``view`` see the same events (streams share their rendering).
    view: tuple = ()


class TokenSigner:
    """Issues and checks signed login tokens with a key kept under ``root_dir``."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    @classmethod
    def from_key_file(cls, path: Path) -> "TokenSigner":
        """The signer of the key in ``path``, created (0600) with 32 random bytes if missing."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
        else:
            key = os.urandom(32)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
        if len(key) < 32:
            raise ConfigError(f"{path}: token key file is damaged ({len(key)} bytes); delete it to make a new one",
                              file=str(path))
        return cls(key)

    def issue(self, user: str, eauth: str, lifetime: float, now: float | None = None) -> tuple[str, float, float]:
        """(token, start, expire) for ``user``, valid ``lifetime`` seconds."""
        start = time.time() if now is None else now
        expire = start + lifetime
        claims = {"sub": user, "eauth": eauth, "iat": round(start, 3), "exp": round(expire, 3),
                  "jti": secrets.token_hex(4)}
        return jwt.encode(claims, self.key, algorithm=TOKEN_ALGORITHM), start, expire

    def check(self, token: str, now: float | None = None) -> tuple[str, str, float, float]:
        """(user, eauth, start, expire) of a valid token, else ``AuthenticationError``."""
        if len(token) > 1024:
            raise AuthenticationError("the token is not valid")
        try:
            # Expiry is checked below against ``now``, so tests can move the clock.
            claims = jwt.decode(token, self.key, algorithms=[TOKEN_ALGORITHM],
                                options={"require": ["sub", "exp", "iat"], "verify_exp": False})
            user, eauth, start, expire = claims["sub"], claims["eauth"], float(claims["iat"]), float(claims["exp"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise AuthenticationError("the token is not valid") from None
        if not isinstance(user, str) or not isinstance(eauth, str):
            raise AuthenticationError("the token is not valid")
        if (time.time() if now is None else now) >= expire:
            raise AuthenticationError("the token has expired; log in again")
        return user, eauth, start, expire
