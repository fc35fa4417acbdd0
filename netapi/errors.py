"""Every error the API answers is JSON ``{"status": <code>, "return": "<one-line reason>"}``.

CherryPy's own errors (404, 405, 413 from the server, 500) and ours (an
``eventbus.errors.ApiError`` raised as a ``cherrypy.HTTPError`` by the
routes, ``eventbus.netapi.app``) all go through ``error_page``.
"""
from __future__ import annotations

import json

import cherrypy

REASONS = {
    404: "no such route",
    405: "method not allowed on this route",
    413: "the request body is too large",
    500: "internal error; see the API log",
}


def body(status: int, reason: str) -> str:
    """The JSON text of an error."""
    return json.dumps({"status": status, "return": reason})


def error_page(status: str, message: str, traceback: str, version: str) -> str:
    """CherryPy's ``error_page.default``: the JSON body of any error response."""
    code = int(str(status).split()[0])
    cherrypy.serving.response.headers["Content-Type"] = "application/json"
    retry_after = getattr(cherrypy.serving.request, "retry_after", None)
    if retry_after is not None:  # CherryPy clears Retry-After from error responses; the route left it here
        cherrypy.serving.response.headers["Retry-After"] = str(retry_after)
    keep = getattr(cherrypy.serving.request, "keep_reason", False)  # a route's own 404 reason
    reason = message if keep or (code < 500 and code not in (404, 405)) else REASONS.get(code, message)
    if code == 404 and not keep:
        reason = f"no route {cherrypy.serving.request.path_info[:200]!r}"
    elif code == 405:
        reason = f"method {cherrypy.serving.request.method} is not allowed on " \
                 f"{cherrypy.serving.request.path_info[:200]!r}"
    return body(code, " ".join(str(reason).split())[:500])


def unpad() -> None:
    """``before_finalize``/``after_error_response`` hook: drop the blanks CherryPy pads short error pages with (for old IE)."""
    response = cherrypy.serving.response
    if response.headers.get("Content-Type") != "application/json":
        return
    content = b"".join(response.body).rstrip() if response.body else b""
    response.body = [content]
    response.headers["Content-Length"] = str(len(content))
