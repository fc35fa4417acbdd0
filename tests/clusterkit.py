"""Test kit for the fleet-wide bus: a real 3-node NATS JetStream cluster per test, and a stream read back.

``nats_cluster`` is a fresh, ready ``NatsCluster`` (``eventbus.cli.natscluster``) in the test's
``tmp_path``, killed after the test. ``stream_messages`` reads every message a stream holds, in
stream order, as ``(stream seq, headers, body)``, so a test can assert "each event once, in order";
it asks again while the stream elects a leader.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from eventbus.cli.natscluster import NatsCluster

__all__ = ["NatsCluster", "nats_cluster", "stream_messages"]

StoredMessage = tuple[int, dict[str, str], bytes]


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A fresh 3-node JetStream cluster on loopback, ready for replicas=3 streams; killed after the test."""
    with NatsCluster(tmp_path / "nats") as cluster:
        yield cluster


def stream_messages(urls: Sequence[str], stream: str, *, user: str | None = None, password: str | None = None,
                    token: str | None = None, creds: str | None = None,
                    timeout: float = 30.0) -> list[StoredMessage]:
    """Every message ``stream`` holds now, in stream order: ``(stream seq, headers dict, body bytes)``."""
    return asyncio.run(_stream_messages(list(urls), stream, user, password, token, creds, timeout))


async def _stream_messages(urls: list[str], stream: str, user: str | None, password: str | None,
                           token: str | None, creds: str | None, timeout: float) -> list[StoredMessage]:
    import nats
    import nats.js.errors

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def answered(request):
        """``request()``'s answer, asked again while the stream has no leader (a node just failed)."""
        while True:
            try:
                return await request()
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                    nats.js.errors.ServiceUnavailableError):
                if loop.time() > deadline:
                    raise TimeoutError(f"stream {stream!r} did not answer within {timeout:g} s") from None
                await asyncio.sleep(0.2)

    async def stored(js, seq: int) -> StoredMessage | None:
        try:
            message = await answered(lambda: js.get_msg(stream, seq))
        except nats.js.errors.NotFoundError:  # deleted or purged
            return None
        return seq, dict(message.headers or {}), message.data or b""

    client = await nats.connect(urls, user=user, password=password, token=token, user_credentials=creds,
                                connect_timeout=5, max_reconnect_attempts=-1)
    try:
        # Each message by its sequence from the stream leader: no consumer to place on a node.
        js = client.jetstream(timeout=5)
        state = (await answered(lambda: js.stream_info(stream))).state
        got: list[StoredMessage] = []
        for first in range(state.first_seq or 1, state.last_seq + 1, 200):
            batch = range(first, min(first + 200, state.last_seq + 1))
            got += [each for each in await asyncio.gather(*(stored(js, seq) for seq in batch)) if each]
        return got
    finally:
        await client.close()
