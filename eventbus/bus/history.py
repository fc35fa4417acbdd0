"""The one reader's history part without a live stream: what a resuming SSE client missed.

Page by page through the daemon's replay verb (its window, then its
journal), with the same inbox and reading loop as a listening handle, so the
order, the de-duplication and the gap notices are the same.
"""
from __future__ import annotations

from typing import Iterator

from eventbus.bus import control
from eventbus.bus.inbox import ASK, READ, Event, Inbox


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
        todo = inbox.step(everything, following=True)
        if todo is READ:
            return  # no live stream: the history ends at the head
        if todo is ASK:
            inbox.answer(client.request(*inbox.question()), 0.0)
        else:
            yield todo  # type: ignore[misc]
