"""Connecting a master (or its API, reactor, forwarder) to the fleet's NATS JetStream cluster (asyncio).

``connect`` opens one nats-py client on ``ClusterSettings`` (it reconnects by itself for as long as it
lives); ``ensure_stream`` makes the stream when it is missing; ``reason`` turns what nats-py raised into the
one line a log or an ``eventbus/cluster/down`` event carries, with every secret hidden.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig

from eventbus.cluster.settings import ClusterSettings
from eventbus.errors import ClusterError

CONNECT_TIMEOUT = 2.0
RECONNECT_WAIT = 0.5
# Past JetStream's own duplicate window a master's de-duplication is its own (docs/fleet.md).
DUPLICATE_WINDOW = 120.0

Callback = Callable[..., Awaitable[None]]


def _refused(exc: BaseException) -> bool:
    """Whether the server refused the credentials (nats-py raises its plain ``Error`` for it, too)."""
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(exc).lower()


def reason(exc: BaseException, settings: ClusterSettings | None = None) -> str:
    """One line saying why the cluster did not answer or refused, secrets hidden."""
    if isinstance(exc, nats.errors.NoServersError):
        text = "no server answered"
    elif isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        text = "no answer in time"
    elif isinstance(exc, nats.js.errors.NoStreamResponseError) or isinstance(exc, nats.errors.NoRespondersError):
        text = "JetStream did not answer (no stream leader)"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused (no NATS server listening there)"
    elif isinstance(exc, OSError):
        text = f"cannot connect: {exc.strerror or exc}"
    elif isinstance(exc, nats.js.errors.APIError):
        text = f"JetStream refused: {exc.description or exc}"
    elif isinstance(exc, nats.errors.AuthorizationError):
        text = "authorization violation (user, password, token or creds refused)"
    else:
        text = str(exc) or type(exc).__name__
        if "authorization" in text.lower():
            text = "authorization violation (user, password, token or creds refused)"
    text = " ".join(text.split())
    return settings.hide(text) if settings is not None else text


async def connect(settings: ClusterSettings, *, name: str, error_cb: Callback | None = None,
                  disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None,
                  timeout: float = CONNECT_TIMEOUT) -> Client:
    """A connected client (it reconnects forever once connected); ``ClusterError`` with the reason if not."""
    client = Client()
    last: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        # A refused credential is what a person must hear about, not the reset that follows it.
        if not (last and _refused(last[0])):
            last[:] = [exc]
        if error_cb is not None:
            await error_cb(exc)

    options: dict[str, Any] = dict(servers=list(settings.servers), name=name, connect_timeout=timeout,
                                   allow_reconnect=True, max_reconnect_attempts=-1,
                                   reconnect_time_wait=RECONNECT_WAIT, error_cb=on_error,
                                   **settings.connect_options())
    if disconnected_cb is not None:
        options["disconnected_cb"] = disconnected_cb
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    try:
        # With reconnects forever nats-py's first connect also tries the servers forever: bound it here.
        await asyncio.wait_for(client.connect(**options), timeout * max(1, len(settings.servers)) + 1)
    except Exception as exc:  # noqa: BLE001 - nats-py also raises plain errors (a creds file it cannot use)
        cause = last[0] if last else exc
        await _close_quietly(client)
        raise ClusterError(reason(cause, settings)) from None
    return client


async def _close_quietly(client: Client) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - a client that never connected may fail to close; nothing to keep
        pass


async def ensure_stream(js: Any, settings: ClusterSettings) -> Any:
    """The stream's info, made first when missing (subjects ``<prefix>.>``, ``replicas``, file storage)."""
    try:
        return await js.stream_info(settings.stream)
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(name=settings.stream, subjects=[settings.subject_prefix + ".>"],
                          num_replicas=settings.replicas, storage=StorageType.FILE,
                          duplicate_window=DUPLICATE_WINDOW)
    try:
        return await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Another master made it meanwhile.
        return await js.stream_info(settings.stream)
