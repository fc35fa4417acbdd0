"""``Authorization: Bearer <JWT>``: HS256 only, ``exp`` required, payload ``{"user": {"username", "role"}}``.

Role ``admin`` sees every event; role ``user`` only events whose
``data["id"]`` is its username (a minion's own events, typically).
"""
from __future__ import annotations

import jwt

from eventbus.errors import AuthenticationError
from eventbus.netapi.auth import Principal

ALGORITHMS = ["HS256"]
ROLES = ("admin", "user")


def _own_events(username: str):
    return lambda _tag, event_id: event_id == username


def principal(token: str, secret: str) -> Principal:
    """The principal of a valid JWT, else ``AuthenticationError`` saying why (never echoing the token)."""
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the JWT has expired") from None
    except jwt.InvalidAlgorithmError:
        raise AuthenticationError("the JWT is not signed with HS256") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError("the JWT signature does not match") from None
    except jwt.MissingRequiredClaimError:
        raise AuthenticationError("the JWT has no 'exp' claim") from None
    except jwt.PyJWTError:
        raise AuthenticationError("the JWT is malformed") from None
    user = claims.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("username"), str) or not user["username"]:
        raise AuthenticationError("the JWT has no user.username claim")
    role = user.get("role")
    if role not in ROLES:
        raise AuthenticationError("the JWT's user.role must be 'admin' or 'user'")
    username = user["username"]
    accepts = None if role == "admin" else _own_events(username)
    expire = float(claims["exp"])
    view = ("all",) if role == "admin" else ("id", username)
    return Principal(username, "jwt", float(claims.get("iat", 0) or 0), expire,
                     ("*",) if role == "admin" else (), accepts, view)
