"""``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>``: made for webhooks and CloudEvents, checked on ingest."""
from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature`` value of ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(header: str | None, body: bytes, *secrets: str | None) -> bool:
    """Whether ``header`` signs ``body`` with one of ``secrets`` (``None`` ones skipped), in constant time."""
    if not header:
        return False
    given = header.encode("latin-1", "replace")
    good = False
    for secret in secrets:
        if secret:
            good |= hmac.compare_digest(given, sign(body, secret).encode())
    return good
