"""One HTTP POST of a JSON body, for the reactor's ``post`` action.

Kept alone so the forwarders' webhook delivery can replace it later. Uses
tornado's blocking ``HTTPClient`` (one per calling thread: it owns an IOLoop).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

_local = threading.local()


@dataclass(frozen=True)
class PostResult:
    """What a POST came to: the HTTP status (``None`` if no answer) and, when it failed, why."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def post_json(url: str, body: Any, timeout: float, headers: dict[str, str] | None = None) -> PostResult:
    """POST ``body`` as JSON to ``url``; ok for a 2xx answer within ``timeout`` seconds."""
    from tornado.httpclient import HTTPClient, HTTPClientError, HTTPRequest

    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = HTTPClient()
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    request = HTTPRequest(url, method="POST", body=json.dumps(body, default=str), headers=all_headers,
                          connect_timeout=timeout, request_timeout=timeout, follow_redirects=False)
    try:
        response = client.fetch(request)
    except HTTPClientError as exc:
        return PostResult(exc.code if exc.code != 599 else None, f"POST {url}: {exc}")
    except (OSError, ValueError) as exc:
        return PostResult(None, f"POST {url}: {exc}")
    return PostResult(response.code, None)
