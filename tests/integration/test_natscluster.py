"""The local NATS JetStream cluster kit against real nats-server nodes: replication, failover, restarts, auth."""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import PubAck

from eventbus.cli.freeports import free_runs
from eventbus.cli.natscluster import NatsCluster
from eventbus.errors import EventBusError
from tests.clusterkit import nats_cluster, stream_messages  # noqa: F401 - fixture

STREAM = "KIT"
SUBJECTS = ["kit.>"]
# What a JetStream publish raises when no stream answers it: no node, or no leader yet.
PUBLISH_FAILURES = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError,
                    nats.errors.ConnectionReconnectingError)


async def _connect(urls: list[str], **options) -> nats.NATS:
    return await nats.connect(urls, connect_timeout=3, reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                              **options)


async def _add_stream(urls: list[str], **options) -> None:
    client = await _connect(urls, **options)
    try:
        await client.jetstream().add_stream(name=STREAM, subjects=SUBJECTS, num_replicas=3)
    finally:
        await client.close()


async def _publish_until_stored(js, number: int, deadline: float) -> PubAck:
    """Publish message ``number`` with its own Nats-Msg-Id, again and again (same id) until JetStream acks it."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await js.publish(f"kit.{number}", str(number).encode(), timeout=2,
                                    headers={"Nats-Msg-Id": f"m{number}"})
        except PUBLISH_FAILURES + (nats.js.errors.APIError,):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def publish(urls: list[str], numbers: range, timeout: float = 45.0, **options) -> list[PubAck]:
    async def run() -> list[PubAck]:
        client = await _connect(urls, **options)
        try:
            js = client.jetstream()
            deadline = asyncio.get_running_loop().time() + timeout
            return [await _publish_until_stored(js, n, deadline) for n in numbers]
        finally:
            await client.close()

    return asyncio.run(run())


def ids_in_order(urls: list[str]) -> list[str]:
    return [headers["Nats-Msg-Id"] for _seq, headers, _body in stream_messages(urls, STREAM)]


def expected(numbers: range) -> list[str]:
    return [f"m{n}" for n in numbers]


def stored_on(cluster: NatsCluster, index: int) -> int:
    """How many messages node ``index`` itself holds in its replica of the stream."""
    answer = cluster.jsz(index, accounts=True, streams=True)
    for account in answer.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail["name"] == STREAM:
                return detail["state"]["messages"]
    return 0


def wait_stored_on(cluster: NatsCluster, index: int, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (held := stored_on(cluster, index)) != count:
        assert time.monotonic() < deadline, f"node {cluster.names[index]} holds {held} messages, not {count}"
        time.sleep(0.1)


def test_replicated_stream_takes_publishes_through_every_node(nats_cluster: NatsCluster):
    asyncio.run(_add_stream(nats_cluster.urls))
    for index, url in enumerate(nats_cluster.urls):
        publish([url], range(10 * index, 10 * index + 10))
    assert ids_in_order(nats_cluster.urls) == expected(range(30))
    for index in range(3):
        wait_stored_on(nats_cluster, index, 30)


def test_killed_stream_leader_fails_over_and_nothing_is_stored_twice(nats_cluster: NatsCluster):
    urls = nats_cluster.urls
    asyncio.run(_add_stream(urls))
    publish(urls, range(10))
    leader = nats_cluster.stream_leader(STREAM)
    nats_cluster.kill(leader)
    acks = publish(urls, range(10, 20))
    assert not any(ack.duplicate for ack in acks[1:])
    again = publish(urls, range(15, 16))  # a re-send of a stored message is acknowledged, not stored
    assert again[0].duplicate and again[0].seq == acks[5].seq
    assert nats_cluster.stream_leader(STREAM) != leader
    assert ids_in_order(urls) == expected(range(20))


def test_restarted_node_catches_up_and_counts_for_the_quorum(nats_cluster: NatsCluster):
    urls = nats_cluster.urls
    asyncio.run(_add_stream(urls))
    publish(urls, range(5))
    follower = (nats_cluster.stream_leader(STREAM) + 1) % 3
    nats_cluster.kill(follower)
    assert not nats_cluster.running(follower)
    publish(urls, range(5, 15))
    nats_cluster.start_node(follower)
    nats_cluster.wait_ready()
    wait_stored_on(nats_cluster, follower, 15)
    # With the leader gone, the two left (one of them the restarted node) must still make a quorum.
    nats_cluster.kill(nats_cluster.stream_leader(STREAM))
    publish(urls, range(15, 20))
    assert ids_in_order(urls) == expected(range(20))


def test_all_nodes_stopped_refuses_publishes_until_they_are_back(nats_cluster: NatsCluster):
    urls = nats_cluster.urls
    asyncio.run(_add_stream(urls))
    publish(urls, range(5))

    async def while_down() -> None:
        client = await _connect(urls)
        try:
            js = client.jetstream()
            nats_cluster.stop_all()
            assert not any(nats_cluster.running(i) for i in range(3))
            with pytest.raises(PUBLISH_FAILURES):
                await js.publish("kit.5", b"5", timeout=2, headers={"Nats-Msg-Id": "m5"})
        finally:
            await client.close()

    asyncio.run(while_down())
    for index in range(3):
        nats_cluster.start_node(index)
    nats_cluster.wait_ready()
    publish(urls, range(5, 10))
    assert ids_in_order(urls) == expected(range(10))


def test_user_and_password_are_required_and_routes_still_replicate(tmp_path: Path):
    with NatsCluster(tmp_path / "nats", user="eventbus", password="s3cr3t \"quoted\"") as cluster:
        credentials = {"user": "eventbus", "password": "s3cr3t \"quoted\""}
        asyncio.run(_add_stream(cluster.urls, **credentials))  # replicas=3: the nodes' routes work

        async def refused(**options) -> None:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(cluster.urls[0], connect_timeout=3, allow_reconnect=False, **options)

        asyncio.run(refused(user="eventbus", password="wrong"))
        asyncio.run(refused())
        publish(cluster.urls, range(3), **credentials)
        assert [body for _seq, _headers, body in stream_messages(cluster.urls, STREAM, **credentials)] \
            == [b"0", b"1", b"2"]
        ports = [int(url.rsplit(":", 1)[1]) for url in cluster.urls]
    for port in ports:  # closed: every node is gone
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_node_that_cannot_start_is_named_with_its_log(tmp_path: Path):
    cluster = NatsCluster(tmp_path / "nats")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cluster.ports[1].client))
        taken.listen()
        cluster.start()
        try:
            with pytest.raises(EventBusError) as failure:
                cluster.wait_ready(timeout=30)
        finally:
            cluster.close()
    message = str(failure.value)
    assert "n2" in message and "address already in use" in message, message


def test_make_cluster_runs_a_cluster_until_sigterm(tmp_path: Path):
    ports = free_runs(3, 3)
    runner = subprocess.Popen([sys.executable, "-m", "eventbus.cli.devcluster", str(tmp_path / "nats"),
                               "--ports", ",".join(map(str, ports))], stdout=subprocess.PIPE, text=True)
    try:
        printed = []
        deadline = time.monotonic() + 60
        while not printed or not printed[-1].startswith("Ctrl-C stops every node"):
            line = runner.stdout.readline()
            assert line and time.monotonic() < deadline, f"the runner exited or hung; it printed {printed}"
            printed.append(line)
        servers = next(line for line in printed if "servers:" in line)
        urls = servers.split("[", 1)[1].rstrip("]\n").split(", ")
        assert urls == [f"nats://127.0.0.1:{ports[0] + i}" for i in range(3)]
        asyncio.run(_add_stream(urls))
        publish(urls, range(3))
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        runner.stdout.close()
    for port in ports[0], ports[0] + 1, ports[0] + 2:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert "Server Exiting" in (tmp_path / "nats" / "n1" / "nats.log").read_text()
