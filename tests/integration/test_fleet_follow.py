"""``eventbus.cluster.follow.FleetReader`` on a real 3-node NATS JetStream cluster: stream order from a
stream seq, its start at the stream's end, gaps where the stream no longer holds what was wanted,
unreadable messages skipped, and reading on after the whole cluster went away and came back."""
from __future__ import annotations

import asyncio
import time

from eventbus.cluster import jetstream
from eventbus.cluster.follow import FleetReader, Gap, Position
from eventbus.cluster.records import FleetEvent
from tests.clusterkit import NatsCluster, nats_cluster  # noqa: F401  (the fixture)
from tests.integration.test_api_fleet import Fleet, start_cluster, stop_cluster


def take(reader: FleetReader, count: int, within: float = 60.0) -> list:
    got: list = []
    deadline = time.monotonic() + within
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} items within {within:g} s: {got}"
        item = reader.get(0.5)
        if item is not None:
            got.append(item)
    return got


def publish_raw(fleet: Fleet, body: bytes) -> None:
    async def publish() -> None:
        client = await jetstream.connect(fleet.settings, name="test-raw", timeout=10)
        try:
            await client.jetstream(timeout=20).publish(fleet.prefix + ".junk", body)
        finally:
            await client.close()
    asyncio.run(publish())


def test_stream_order_from_a_seq_with_unreadable_messages_skipped(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    first = fleet.publish(("a/1", {"n": 1}), ("a/2", {"n": 2}), origin="m1")
    publish_raw(fleet, b"not a record")
    second = fleet.publish(("b/1", {"n": 3}), origin="m2")
    with FleetReader(fleet.settings, first[1], name="test") as reader:
        got = take(reader, 2)
        assert [(e.stream_seq, e.tag, e.data, e.origin) for e in got] == \
            [(first[1], "a/2", {"n": 2, "_origin": "m1"}, "m1"), (second[0], "b/1", {"n": 3, "_origin": "m2"}, "m2")]
        assert reader.skipped == 1 and reader.read_upto == second[0]
        assert reader.get(1.0) is None


def test_without_a_seq_it_starts_at_the_streams_end(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    old = fleet.publish(("old/1", {}), ("old/2", {}))
    with FleetReader(fleet.settings, None, name="test") as reader:
        assert take(reader, 1) == [Position(old[-1])]
        new = fleet.publish(("new/1", {}))
        event, = take(reader, 1)
        assert isinstance(event, FleetEvent) and event.stream_seq == new[0] == old[-1] + 1


def test_what_the_stream_no_longer_holds_is_one_gap(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    fleet.publish(*[(f"gone/{i}", {}) for i in range(5)])
    fleet.purge()
    kept = fleet.publish(("kept/1", {}))
    with FleetReader(fleet.settings, 2, name="test") as reader:
        gap, event = take(reader, 2)
        assert gap == Gap(lost=4, resumed_at=6)
        assert event.stream_seq == kept[0] == 6


def test_it_reads_on_after_the_cluster_went_away(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    before = fleet.publish(("before/1", {}), ("before/2", {}))
    with FleetReader(fleet.settings, 1, name="test") as reader:
        assert [e.stream_seq for e in take(reader, 2)] == before
        stop_cluster(nats_cluster)
        deadline = time.monotonic() + 60
        while reader.up:
            assert time.monotonic() < deadline, "the reader never saw the cluster go"
            time.sleep(0.1)
        assert reader.error
        start_cluster(fleet)
        after = fleet.publish(("after/1", {}), ("after/2", {}))
        assert [e.stream_seq for e in take(reader, 2, within=90)] == after == [3, 4]
        assert reader.get(1.0) is None and reader.up
