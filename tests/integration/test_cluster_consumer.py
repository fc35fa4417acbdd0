"""The shared fleet consumer (``eventbus.cluster.consumer``) through a leader change and a cluster that goes away.

Real 3-node NATS cluster, stream with 3 replicas; the events are put in as a master's export writes them.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from eventbus.cluster import jetstream, records
from eventbus.cluster.consumer import FleetConsumer, durable_name
from eventbus.cluster.settings import ClusterSettings
from tests.clusterkit import nats_cluster  # noqa: F401 (the fixture)
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def settings_for(cluster) -> ClusterSettings:
    stream = "C" + uuid.uuid4().hex[:8].upper()
    return ClusterSettings(servers=tuple(cluster.urls), stream=stream, subject_prefix=stream.lower(), replicas=3)


def publish(settings: ClusterSettings, numbers: range) -> list[int]:
    """Publish events ``t/c`` {n}; each retried until the stream stored it (a leader may be being elected)."""
    async def run() -> list[int]:
        client = await jetstream.connect(settings, name="test-publisher")
        try:
            js = client.jetstream(timeout=1)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await jetstream.ensure_stream(js, settings)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            seqs = []
            for n in numbers:
                while True:
                    try:
                        ack = await js.publish(records.subject_for(settings.subject_prefix, "t/c"),
                                               records.body(n, "t/c", {"n": n}),
                                               headers=records.headers(f"m0:{n}", "m0"))
                        seqs.append(ack.seq)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
            return seqs
        finally:
            await client.close()
    return asyncio.run(run())


def junk(settings: ClusterSettings) -> None:
    """A message no master wrote (no fleet headers, no record), into the stream."""
    async def run() -> None:
        client = await jetstream.connect(settings, name="junk")
        try:
            await client.jetstream().publish(settings.subject_prefix + ".x", b"not json", headers={"a": "b"})
        finally:
            await client.close()
    asyncio.run(run())


def take(consumer: FleetConsumer, seqs: list[int], numbers: range, timeout: float = 60) -> dict[int, int]:
    """Read (and mark done) until the events ``seqs`` (carrying ``numbers``) all came; the events that came
    again meanwhile (stream seq -> n): at least once at this level, a crash may hand out an event again."""
    expected = dict(zip(seqs, numbers))
    got: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while not expected.items() <= got.items():
        assert time.monotonic() < deadline, f"got {sorted(got)} of {seqs}; consumer {consumer.status()}"
        event = consumer.get(0.2)
        if event is not None:
            got[event.stream_seq] = event.data["n"]
            consumer.done(event.stream_seq)
    again = {seq: n for seq, n in got.items() if seq not in expected}
    assert all(seq < min(seqs) for seq in again), f"events never published came: {again}"
    return again


def test_the_consumer_skips_junk_and_reads_on_through_a_leader_change_and_a_cluster_restart(nats_cluster):
    settings = settings_for(nats_cluster)
    publish(settings, range(0))
    consumer = FleetConsumer(settings, durable_name("forward", "a.b"), client_name="test")
    consumer.start()
    try:
        assert consumer.durable.startswith("forward_a_b_")
        wait_for(lambda: consumer.state == "up", 30, what="the consumer to be up")
        junk(settings)
        first = publish(settings, range(0, 50))
        assert take(consumer, first, range(0, 50)) == {}
        # The message no master wrote was acked, counted and never handed out.
        assert consumer.skipped == 1 and first[0] == 2
        wait_for(lambda: consumer.held == 0, 10, what="every event done to be acked")
        # The stream's leader dies: a new one is elected; nothing is missed.
        nats_cluster.kill(nats_cluster.stream_leader(settings.stream))
        second = publish(settings, range(50, 100))
        take(consumer, second, range(50, 100))
        # The whole cluster goes away: the consumer says so, and reads on once it is back.
        nats_cluster.kill_all()
        wait_for(lambda: consumer.state == "down" and consumer.error, 60, what="the consumer to see the cluster go")
        nats_cluster.start()
        nats_cluster.wait_ready(quorum=True)
        # A cluster killed at once may not have kept the last acks: those events may come again.
        third = publish(settings, range(100, 120))
        take(consumer, third, range(100, 120))
        wait_for(lambda: consumer.state == "up", 30, what="the consumer to be up again")
    finally:
        consumer.stop()
