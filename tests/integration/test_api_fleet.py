"""``/events`` in cluster mode (SPEC 12): real API processes streaming the fleet stream of a real 3-node
NATS JetStream cluster, fed by records published into the stream exactly as a master exports them.

SSE ids are stream seqs; ``Last-Event-ID`` from one master's API resumes on another's with no gap and no
duplicate, from the API's window or from the stream; what the stream no longer holds is one gap record;
the cluster going away (at start or mid-stream) keeps streams open and they go on when it is back.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from typing import Any, Iterator

import nats.errors
import nats.js.errors
import requests

from eventbus.cluster import jetstream, records
from eventbus.cluster.settings import ClusterSettings
from tests.apinode import PASSWORDS, ApiEnv
from tests.clusterkit import NatsCluster, nats_cluster  # noqa: F401  (the fixture)
from tests.helpers import wait_for
from tests.sse import SSEReader

GAP_TAG = "eventbus/stream/gap"


class Fleet:
    """The cluster block the test's masters share, and a publisher writing into its stream as a master does."""

    def __init__(self, cluster: NatsCluster, replicas: int = 3) -> None:
        self.cluster = cluster
        self.stream = "T" + uuid.uuid4().hex[:10]
        self.prefix = "t" + uuid.uuid4().hex[:8]
        self.block = {"servers": cluster.urls, "stream": self.stream, "subject_prefix": self.prefix,
                      "replicas": replicas}
        self.settings = ClusterSettings(tuple(cluster.urls), self.stream, replicas, self.prefix)
        self.local_seq = 0

    def publish(self, *events: tuple[str, dict], origin: str = "m1") -> list[int]:
        """Write each ``(tag, data)`` as master ``origin`` exports it; their stream seqs."""
        return asyncio.run(self._publish(events, origin))

    async def _publish(self, events: tuple[tuple[str, dict], ...], origin: str) -> list[int]:
        client = await jetstream.connect(self.settings, name="test-publisher", timeout=10)
        try:
            js = client.jetstream(timeout=20)
            deadline = time.monotonic() + 60
            while True:
                try:
                    await jetstream.ensure_stream(js, self.settings)
                    break
                except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError,
                        nats.errors.NoRespondersError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            seqs = []
            for tag, data in events:
                self.local_seq += 1
                seqs.append(await self._publish_one(js, tag, data, origin))
            return seqs
        finally:
            await client.close()

    async def _publish_one(self, js: Any, tag: str, data: dict, origin: str) -> int:
        """Publish until the stream acknowledges (a new stream's leader may still be elected); its seq.
        A retry after a lost ack is stored once: the message id is the same."""
        deadline = time.monotonic() + 60
        while True:
            try:
                ack = await js.publish(records.subject_for(self.prefix, tag), records.body(self.local_seq, tag, data),
                                       headers=records.headers(records.own_identity(origin, self.local_seq), origin))
                return ack.seq
            except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def purge(self) -> None:
        async def purge() -> None:
            client = await jetstream.connect(self.settings, name="test-purge", timeout=10)
            try:
                await client.jetstream(timeout=20).purge_stream(self.stream)
            finally:
                await client.close()
        asyncio.run(purge())

    def publish_until_seen(self, reader: Live, tag: str = "probe/live") -> int:
        """Publish probes until ``reader`` (a live stream) shows one: from then on the API follows live.
        The stream seq of the probe it showed."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seq, = self.publish((tag, {"probe": True}))
            try:
                got = reader.records(1, within=2)
            except AssertionError:
                continue
            return got[0]["id"]
        raise AssertionError("no probe came through the live stream within 60 s")


@contextlib.contextmanager
def fleet_api(fleet: Fleet, master_id: str, **api_keys: Any) -> Iterator[ApiEnv]:
    """A running API (no master daemon: /events reads the stream) whose master config has the fleet's cluster."""
    env = ApiEnv({"id": master_id, "cluster": fleet.block}, **api_keys)
    try:
        for name, password in PASSWORDS.items():
            env.add_user(name, password)
        env.start_api()
        yield env
    except BaseException:
        if env.api is not None:
            print(f"--- the api's log (end) ---\n{env.api.log[-6000:]}")
        raise
    finally:
        env.stop_api()
        env.cleanup()


class Live:
    """A ``GET /events`` read by its own thread: records and comments pile up as they come."""

    def __init__(self, env: ApiEnv, params: dict, headers: dict) -> None:
        self.reader = SSEReader(env, params=params, headers=headers, timeout=120)
        assert self.reader.response.status_code == 200, self.reader.response.text
        self.got: list[dict] = []
        self.taken = 0
        self.ended = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for record in self.reader:
                self.got.append(record)
        except (requests.RequestException, OSError, ValueError, AttributeError):
            pass  # closed by the test
        finally:
            self.ended = True

    @property
    def comments(self) -> list[str]:
        return self.reader.comments

    def records(self, count: int, within: float = 60.0) -> list[dict]:
        """The next ``count`` records; ``AssertionError`` showing what came if they do not within ``within`` s."""
        deadline = time.monotonic() + within
        while len(self.got) - self.taken < count:
            if time.monotonic() > deadline or self.ended:
                came = self.got[self.taken:]
                raise AssertionError(f"{len(came)} of {count} records within {within:g} s "
                                     f"(stream ended: {self.ended}): {shown(came)}")
            time.sleep(0.05)
        taken, self.taken = self.got[self.taken:self.taken + count], self.taken + count
        return taken

    def close(self) -> None:
        # The reading thread is blocked in a read: shut the socket down so it ends now.
        fp = getattr(getattr(self.reader.response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.reader.close()
        self._thread.join(10)
        assert not self._thread.is_alive()

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def stream(env: ApiEnv, token: str, last_id: int | None = None, **params: str) -> Live:
    headers = {"X-Auth-Token": token}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    return Live(env, params, headers)


def shown(got: list[dict]) -> list[tuple]:
    """``(id, tag, data)`` of each record, for comparing whole sequences."""
    return [(r.get("id"), r["tag"], r["data"]["data"]) for r in got]


def expected(seqs: list[int], events: list[tuple[str, dict]], origin: str = "m1") -> list[tuple]:
    return [(seq, tag, {**data, "_origin": origin}) for seq, (tag, data) in zip(seqs, events)]


def stop_cluster(cluster: NatsCluster) -> None:
    cluster.kill_all()


def start_cluster(fleet: Fleet) -> None:
    """Start every node again and wait until the fleet's stream has a leader."""
    fleet.cluster.start()
    fleet.cluster.wait_ready(timeout=90, quorum=True)
    fleet.cluster.stream_leader(fleet.stream, timeout=90)


def test_fleet_events_stream_with_stream_seqs_in_order_acl_applied(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    before = [("myco/old", {"n": 0})]
    old_seqs = fleet.publish(*before)
    with fleet_api(fleet, "m1") as api:
        alice, bob = api.login("alice"), api.login("bob")
        # Resuming from the last id the stream held: nothing is missed whatever the timing.
        everything = stream(api, alice, last_id=old_seqs[-1])
        mine = stream(api, bob, last_id=old_seqs[-1])
        tagged = stream(api, alice, last_id=old_seqs[-1], tag="other/*")
        events = [("myco/a", {"n": 1}), ("other/b", {"n": 2}), ("myco/c/d", {"n": 3}), ("other/e", {"n": 4})]
        seqs = fleet.publish(*events[:2], origin="m1") + fleet.publish(*events[2:], origin="m2")
        assert seqs == list(range(old_seqs[-1] + 1, old_seqs[-1] + 5))
        want = expected(seqs[:2], events[:2], "m1") + expected(seqs[2:], events[2:], "m2")
        assert shown(everything.records(4, within=60)) == want
        assert shown(mine.records(2, within=60)) == [want[0], want[2]]
        assert shown(tagged.records(2, within=60)) == [want[1], want[3]]
        # The raw stream: id is the stream seq, tag and data lines as for the local bus.
        raw = requests.get(api.url("/events"), headers={"X-Auth-Token": alice, "Last-Event-ID": "0"},
                           stream=True, timeout=60)
        text = b""
        for chunk in raw.iter_content(chunk_size=None):
            text += chunk
            if text.count(b"\n\n") >= 1 + 5:  # retry: plus five events
                break
        raw.close()
        first = text.split(b"\n\n")[1].decode()
        assert first.startswith(f"id: {old_seqs[0]}\ntag: myco/old\ndata: "), first
        assert '"_origin": "m1"' in first
        for reader in (everything, mine, tagged):
            reader.close()


def test_live_stream_without_id_follows_the_fleet(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    with fleet_api(fleet, "m1") as api:
        with stream(api, api.login("alice")) as live:
            probe = fleet.publish_until_seen(live)
            events = [(f"fleet/{i}", {"i": i}) for i in range(20)]
            seqs = fleet.publish(*events)
            # Probes published after the one shown may still come first: skip them, keep the order.
            got: list[dict] = []
            while len(got) < 20:
                got += [r for r in live.records(1, within=60) if r["tag"] != "probe/live"]
            assert shown(got) == expected(seqs, events)
            assert min(r["id"] for r in got) > probe


def test_resume_from_one_masters_api_on_another(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    first = [(f"fleet/a/{i}", {"i": i}) for i in range(8)]
    seqs = fleet.publish(*first[:4], origin="m1") + fleet.publish(*first[4:], origin="m2")
    with fleet_api(fleet, "m1") as api1, fleet_api(fleet, "m2") as api2:
        with stream(api1, api1.login("alice"), last_id=0) as reader:
            got = reader.records(3, within=60)
        assert [r["id"] for r in got] == seqs[:3]
        api1.stop_api()
        # API 2 started before these: they are in its window.
        later = [(f"fleet/b/{i}", {"i": i}) for i in range(5)]
        later_seqs = fleet.publish(*later, origin="m1")
        token2 = api2.login("alice")
        with stream(api2, token2, last_id=got[-1]["id"]) as resumed:
            rest = resumed.records(5 + 5, within=60)
            assert shown(rest) == (expected(seqs[3:4], first[3:4], "m1") + expected(seqs[4:], first[4:], "m2")
                                   + expected(later_seqs, later, "m1"))
            # Then live, with no duplicate at the seam.
            tail = [("fleet/c", {"i": 99})]
            tail_seqs = fleet.publish(*tail, origin="m2")
            assert shown(resumed.records(1, within=60)) == expected(tail_seqs, tail, "m2")
        # The query parameter works as the header does.
        with Live(api2, {"last_event_id": str(seqs[5])}, {"X-Auth-Token": token2}) as by_query:
            assert [r["id"] for r in by_query.records(2, within=60)] == [seqs[6], seqs[7]]


def test_resume_older_than_the_window_reads_the_stream(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    events = [(f"myco/old/{i}", {"i": i}) if i % 2 else (f"other/old/{i}", {"i": i}) for i in range(30)]
    seqs = fleet.publish(*events)
    # A window of 100 records (stream_queue's least) started after these: the resume reads the stream.
    with fleet_api(fleet, "m2", stream_queue=100) as api:
        with stream(api, api.login("bob"), last_id=seqs[4]) as resumed:
            want = [e for e in expected(seqs, events) if e[0] > seqs[4] and e[1].startswith("myco/")]
            assert shown(resumed.records(len(want), within=60)) == want
            more = [("myco/new", {"i": 100})]
            more_seqs = fleet.publish(*more)
            assert shown(resumed.records(1, within=60)) == expected(more_seqs, more)
        # Past the window's size: the oldest fall out of it and are read from the stream again.
        many = [(f"myco/many/{i}", {"i": i}) for i in range(150)]
        many_seqs = fleet.publish(*many)
        with stream(api, api.login("alice"), last_id=many_seqs[10]) as resumed:
            got = resumed.records(139, within=90)
            assert [r["id"] for r in got] == many_seqs[11:]


def test_resume_from_an_id_the_stream_no_longer_holds_gets_one_gap_record(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    fleet.publish(*[(f"fleet/gone/{i}", {"i": i}) for i in range(6)])
    fleet.purge()
    kept = [(f"fleet/kept/{i}", {"i": i}) for i in range(3)]
    kept_seqs = fleet.publish(*kept)
    assert kept_seqs == [7, 8, 9]
    with fleet_api(fleet, "m1") as api:
        with stream(api, api.login("alice"), last_id=2) as resumed:
            got = resumed.records(4, within=60)
        assert got[0]["tag"] == GAP_TAG and "id" not in got[0]
        assert got[0]["data"]["data"] == {"lost": 4}  # seqs 3 to 6
        assert shown(got[1:]) == expected(kept_seqs, kept)


def test_cluster_down_at_api_start_streams_wait_and_go_on(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    before = [("fleet/before/1", {"i": 1}), ("fleet/before/2", {"i": 2})]
    seqs = fleet.publish(*before)
    stop_cluster(nats_cluster)
    with fleet_api(fleet, "m1") as api:
        token = api.login("alice")
        resuming = stream(api, token, last_id=seqs[0])
        live = stream(api, token)
        # Open and kept open: a keepalive comes while the cluster is away.
        wait_for(lambda: _keepalive(live) and _keepalive(resuming), 60, what="keepalives on both streams")
        assert not live.got and not resuming.got and not live.ended
        start_cluster(fleet)
        after = [("fleet/after/1", {"i": 3})]
        after_seqs = fleet.publish(*after)
        assert shown(resuming.records(2, within=90)) == (expected(seqs[1:], before[1:])
                                                          + expected(after_seqs, after))
        fleet.publish_until_seen(live)
        assert api.api is not None
        wait_for(lambda: "the cluster does not answer" in api.api.log, 30, what="the API's log line")
        assert api.api.log.count("the cluster does not answer") == 1
        resuming.close()
        live.close()


def _keepalive(reader: Live) -> bool:
    return any(c.startswith(": keepalive") for c in reader.comments)


def test_cluster_going_away_mid_stream_keeps_streams_open(nats_cluster: NatsCluster) -> None:
    fleet = Fleet(nats_cluster)
    with fleet_api(fleet, "m1") as api:
        token = api.login("alice")
        first = [(f"fleet/one/{i}", {"i": i}) for i in range(3)]
        seqs = fleet.publish(*first)
        reader = stream(api, token, last_id=0)
        assert shown(reader.records(3, within=60)) == expected(seqs, first)
        stop_cluster(nats_cluster)
        assert api.api is not None
        wait_for(lambda: "the cluster does not answer" in api.api.log, 60, what="the API to log the outage")
        wait_for(lambda: _keepalive(reader), 60, what="a keepalive while the cluster is away")
        start_cluster(fleet)
        second = [(f"fleet/two/{i}", {"i": i}) for i in range(3)]
        second_seqs = fleet.publish(*second)
        assert shown(reader.records(3, within=90)) == expected(second_seqs, second)
        assert api.api.log.count("the cluster does not answer") == 1
        reader.close()


def test_an_id_no_stream_seq_reached_yet_streams_live_without_skipping(nats_cluster: NatsCluster) -> None:
    """An id of another scheme (a master without ``cluster`` numbers from its start time in µs) is past every
    stream seq: the stream goes on live from now instead of skipping the fleet's next events up to it."""
    fleet = Fleet(nats_cluster)
    fleet.publish(("fleet/before", {"i": 0}))
    with fleet_api(fleet, "m1") as api:
        with stream(api, api.login("alice"), last_id=1_796_545_059_659_440) as resumed:
            later = [("fleet/after", {"i": 1})]
            later_seqs = fleet.publish(*later)
            assert shown(resumed.records(1, within=60)) == expected(later_seqs, later)
