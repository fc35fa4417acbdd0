"""The bus daemon as a process: ownership of sock_dir, clean shutdown, restarts, garbage."""
from __future__ import annotations

import os
import signal
import socket
import stat
import time

import msgpack
import pytest
import zmq

from eventbus.bus import control, payload, wire
from eventbus import event
from eventbus.errors import BusDisconnectedError
from tests.helpers import Daemon, wait_for


def test_sock_dir_is_private_to_the_user(master):
    mode = stat.S_IMODE(master.sock_dir.stat().st_mode)
    assert mode == 0o700
    for name in ("pull.ipc", "pub.ipc", "ctl.ipc"):
        assert stat.S_ISSOCK((master.sock_dir / name).stat().st_mode)


def test_a_second_daemon_on_the_same_sock_dir_is_refused(master):
    second = Daemon.eventbus("master", master.config_dir).start()
    assert second.proc.wait(15) != 0
    log = second.log
    assert f"pid {master.daemon.proc.pid}" in log and str(master.sock_dir) in log
    assert "Traceback" not in log
    assert master.daemon.alive()
    with event.get_event("master", opts=master.opts()) as bus:
        bus.fire_event({"still": "here"}, "after/second")
        assert bus.get_event(wait=5, tag="after/")["still"] == "here"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_removes_sockets(master_node, signum):
    daemon = master_node.start()
    daemon.signal(signum)
    assert daemon.proc.wait(10) == 0
    leftovers = sorted(p.name for p in master_node.sock_dir.iterdir())
    assert leftovers == [], leftovers
    assert "Traceback" not in daemon.log


def test_stale_sockets_of_a_crashed_daemon_are_replaced(master_node):
    first = master_node.start()
    first.kill()                                   # SIGKILL: sockets and lock file stay behind
    assert (master_node.sock_dir / "pub.ipc").exists()
    master_node.start()
    with event.get_event("master", opts=master_node.opts()) as bus:
        assert bus.fire_event({"n": 1}, "after/crash")
        assert bus.get_event(wait=5, tag="after/")["n"] == 1


def test_ping_and_stats(master):
    info = control.ping(master.sock_dir)
    assert info["node"] == "master" and info["pid"] == master.daemon.proc.pid
    assert info["seq"] >= info["epoch"] > 0
    stats = control.request(master.sock_dir, wire.VERB_STATS)
    assert stats["window_size"] == 10000


def raw_frame(tag: str, data: dict) -> bytes:
    return wire.publish_frame(*payload.pack_event(tag, data, 1 << 20))


def test_garbage_on_every_socket_loses_no_valid_event(master, zmq_context):
    opts = master.opts()
    listener = event.get_event("master", opts=opts)
    context = zmq_context
    push = context.socket(zmq.PUSH)
    push.connect(f"ipc://{master.sock_dir}/pull.ipc")
    garbage = [
        os.urandom(200), b"", b"no separator", b"tag\x00" + msgpack.packb([1, 2, 3]),
        b"tag\x00" + msgpack.packb("str"), b"tag\x00\xc1\xc1", b"\x00" + msgpack.packb({"a": 1}),
        b"\xff\xfe\x00" + msgpack.packb({"a": 1}), b"tag\x00" + msgpack.packb({"a": 1}) + b"trailing",
        b"t\x00" + b"\xdf\xff\xff\xff\xff",          # a map claiming 4 billion entries
    ]
    for n, junk in enumerate(garbage):
        push.send(raw_frame("valid/event", {"n": n}))
        push.send(junk)
    push.send_multipart([b"multi", b"part", os.urandom(30)])
    push.send(raw_frame("valid/event", {"n": len(garbage)}))
    # Bytes that are not ZMTP at all, on each socket.
    for name in ("pull.ipc", "pub.ipc", "ctl.ipc"):
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(master.sock_dir / name))
            raw.sendall(os.urandom(4096))
    # Garbage control requests.
    dealer = context.socket(zmq.DEALER)
    dealer.connect(f"ipc://{master.sock_dir}/ctl.ipc")
    dealer.send_multipart([b"replay", b"\xc1 not msgpack"])
    dealer.send_multipart([b"no-such-verb", msgpack.packb(None)])
    dealer.send(b"one frame only")
    for _ in range(2):
        assert dealer.poll(5000)
        status, _ = dealer.recv_multipart()
        assert status == wire.STATUS_ERROR
    push.send(raw_frame("valid/event", {"n": len(garbage) + 1}))
    got = [listener.get_event(wait=5, tag="valid/") for _ in range(len(garbage) + 2)]
    assert [d["n"] for d in got if d] == list(range(len(garbage) + 2))
    assert listener.get_event(wait=0.3) is None, "garbage reached a subscriber"
    assert master.daemon.alive()
    log = master.daemon.log
    for reason in ("no tag, or no NUL", "not a msgpack map", "not valid msgpack", "not UTF-8",
                   "malformed control request"):
        assert reason in log, reason
    assert "Traceback" not in log
    listener.destroy()


def test_a_flood_of_garbage_is_logged_in_few_lines(master, zmq_context):
    context = zmq_context
    push = context.socket(zmq.PUSH)
    push.connect(f"ipc://{master.sock_dir}/pull.ipc")
    for _ in range(2000):
        push.send(b"junk")
    push.send(raw_frame("flood/done", {}))
    with event.get_event("master", opts=master.opts()) as bus:
        push.send(raw_frame("flood/done", {}))
        assert bus.get_event(wait=5, tag="flood/") is not None
    lines = [line for line in master.daemon.log.splitlines() if "refused" in line]
    assert 1 <= len(lines) <= 3, lines


def test_oversize_frame_from_a_raw_publisher_is_refused(master_node, zmq_context):
    master_node.path.write_text(master_node.path.read_text() + "max_event_size: 2048\n")
    master_node.start()
    push = zmq_context.socket(zmq.PUSH)
    push.connect(f"ipc://{master_node.sock_dir}/pull.ipc")
    with event.get_event("master", opts=master_node.opts()) as bus:
        push.send(b"big\x00" + msgpack.packb({"blob": "x" * 3000}))
        push.send(raw_frame("small/ok", {}))
        assert bus.get_event(wait=5, full=True)["tag"] == "small/ok"
    assert "over max_event_size of 2048 bytes" in master_node.daemon.log


def test_auto_reconnect_survives_a_daemon_restart(master):
    listener = event.get_event("master", opts=master.opts())
    master.stop()
    master.start()
    with event.get_event("master", opts=master.opts(), listen=False) as pub:
        def fired_and_heard():
            pub.fire_event({"after": "restart"}, "restart/test")
            return listener.get_event(wait=0.5, tag="restart/", auto_reconnect=True)
        assert wait_for(fired_and_heard, 15, what="an event after the restart")["after"] == "restart"
    listener.destroy()


def test_without_auto_reconnect_a_lost_daemon_is_an_error(master):
    listener = event.get_event("master", opts=master.opts())
    master.stop()
    with pytest.raises(BusDisconnectedError, match="lost the connection to the master bus"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listener.get_event(wait=0.5)
    listener.destroy()
