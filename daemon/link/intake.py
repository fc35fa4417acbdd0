"""What a minion accepts for its masters: relayed events checked before they reach the spool.

``fire_master`` frames (``tag NUL data``) come in on ``relay.ipc`` and
``eventbus send`` asks the ``relay`` control verb; both are checked here the
same way (size, well-formed, and no tag a minion may not send: see
``eventbus.bus.relay.refused_tag``) before the spool numbers them. Every
master gets them from the spool, so this is done once however many masters
there are.
"""
from __future__ import annotations

from typing import Any

from eventbus.bus import payload, relay, wire
from eventbus.daemon.link.logentries import Refuse
from eventbus.errors import InvalidEventError


def checked(frames: list[bytes], limit: int, minion_id: str) -> tuple[list[bytes], list[Refuse]]:
    """The frames fit to spool, in order, and one refusal for each of the others."""
    check = payload.check_published
    refused = relay.refused_tag
    good: list[bytes] = []
    refusals: list[Refuse] = []
    for frame in frames:
        try:
            cut = check(frame, limit)
            reason = refused(frame[:cut].decode(), minion_id)
        except InvalidEventError as exc:
            reason = str(exc)
        if reason is None:
            good.append(frame)
        else:
            refusals.append(Refuse("relay", f"refused to relay an event: {reason}"))
    return good, refusals


def relay_frame(args: Any, limit: int, minion_id: str) -> bytes:
    """The ``relay`` control verb's ``{'tag', 'data'}`` as a frame to spool; ``ValueError`` to refuse it."""
    if not isinstance(args, dict):
        raise ValueError("expected {'tag': str, 'data': dict}")
    raw_tag, raw_data = payload.pack_event(args.get("tag"), args.get("data"), limit, add_stamp=False)
    reason = relay.refused_tag(args["tag"], minion_id)
    if reason is not None:
        raise InvalidEventError(reason, tag=args["tag"], reason="reserved")
    return wire.publish_frame(raw_tag, raw_data)
