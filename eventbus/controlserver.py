"""The server side of a control socket (``ctl.ipc``): a table of verbs answering request frames. No sockets here.

The bus daemon (``eventbus.daemon.bus``) and the forwarder (``eventbus.daemon.forward.service``)
read their ROUTER in their own loops and send back what ``answer`` returns.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import msgpack

from eventbus.bus import wire
from eventbus.refusallog import Complaints
from eventbus.errors import MalformedFrameError

# Called with the request's unpacked args; raises ValueError (or TypeError, KeyError) to refuse.
VerbHandler = Callable[[Any], Any]


def answer(verbs: Mapping[bytes, VerbHandler], frames: list[bytes], complaints: Complaints,
           endpoint: str) -> list[bytes] | None:
    """The reply frames, routing frames first, to a request as a ROUTER got it; ``None`` (logged) if malformed."""
    try:
        route, verb, raw_args = wire.split_request(frames)
    except MalformedFrameError:
        complaints.refuse("control-malformed", f"refused a malformed control request on {endpoint}")
        return None
    handler = verbs.get(verb)
    if handler is None:
        complaints.refuse("control-verb", f"refused unknown control verb {verb[:40]!r} on {endpoint}")
        return route + wire.reply(f"unknown verb {verb[:40]!r}", ok=False)
    try:
        result, ok = handler(msgpack.unpackb(raw_args, raw=False)), True
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        result, ok = f"{verb.decode(errors='replace')}: {exc}", False
    return route + wire.reply(result, ok=ok)
