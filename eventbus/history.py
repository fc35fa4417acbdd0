"""The one reader's history part without a live stream: what a resuming SSE client missed.

Page by page through the daemon's replay verb (its window, then its
journal), with the same inbox as a listening handle, so the order, the
de-duplication and the gap notices are the same.
"""
from __future__ import annotations

from typing import Iterator

from eventbus import control, wire
from eventbus.event import REPLAY_TIMEOUT
from eventbus.inbox import NEED_FILL, Event, Inbox


def read_history(client: control.Client, after: int, until: int | None = None) -> Iterator[Event]:
    """Retained events after seq ``after`` and before ``until`` (``None``: up to the head), page by page.

    The one reader's history part without a live stream (a resuming SSE
    client): gap notices (``seq`` ``None``) where events are gone.
    ``BusUnavailableError`` when the daemon does not answer.
    """
    inbox = Inbox(keep_limit=0)
    inbox.start_from(after, until)
    everything = inbox.matcher("", "startswith")
    while True:
        gap = inbox.take_gap()
        if gap is not None:
            yield gap
        elif inbox.backlog:
            event = inbox.receive(inbox.backlog.popleft(), everything)
            if event is not None and event is not NEED_FILL:
                yield event
        elif inbox.filling:
            inbox.accept_page(client.request(wire.VERB_REPLAY, inbox.fill_request(), REPLAY_TIMEOUT))
        else:
            return
