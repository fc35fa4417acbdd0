"""The local bus's two doors for any process of the user: the intake frame (``pull.ipc``) and control (``ctl.ipc``).

``intake``: one frame as a publisher sends it, checked by the daemon's own
check (``payload.check_published``); a frame it accepts must then be read
by every consumer without an error: the listeners' inbox
(``eventbus.bus.inbox``), the API's SSE record, the forwarder's records, and
the master's framing of it when a minion relays it.

``control``: control requests (any frames) sent over a real DEALER to the
``ctl.ipc`` ROUTER of a real master bus (with its link's verbs and, as a
master of a fleet-wide bus, the cluster link's ``cluster_import``) and a real
minion bus (with its relay verb), answered by the daemon's own
``Bus._on_control``. Whatever escapes it would end the daemon; a
well-formed request must get a well-formed answer.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import msgpack
import zmq

from bench.procs import Node
from eventbus.daemon.bus import Bus
from eventbus.daemon.cluster import component as cluster
from eventbus.daemon.link.minion import MinionLink
from eventbus.daemon.loop import Loop
from eventbus.daemon.link.protocol import RelayFramer
from eventbus.bus import payload, relay, wire
from eventbus.forwarding import formats
from eventbus.errors import InvalidEventError
from eventbus.bus.inbox import Inbox
from eventbus.netapi.sse.stream import event_record
from tests.fuzz import core

MAX_EVENT_SIZE = 4096
MINION_ID = "m1"
REPLY_WAIT_MS = 2000

INTAKE_WORDS = (b"\x00", b"\x80", b"\x81", b"\xde\x00\x01", b"\xdf\x00\x00\x00\x01", b"\xa3tag", b"\xc4\x01k",
                b"\xd6\xff", b"\xc7", b"\xdc", b"salt/minion/", b"salt/auth", b"salt/key", b"salt/presence/",
                b"salt/netapi/", b"\x00barrier:", b"\xed\xa0\x80", b"\xc0", b"\xcb")


@core.target("intake", "eventbus.daemon.bus intake: payload.check_published on a pull.ipc frame; inbox, SSE record, "
                       "forwarder records and relay framing of every accepted frame",
             max_len=MAX_EVENT_SIZE + 64, per_input=2.0, words=INTAKE_WORDS, seeds=lambda: intake_seeds())
def intake() -> Iterator[core.OneInput]:
    with core.quiet_logs() as watcher:
        framer = RelayFramer(MINION_ID)
        yield lambda frame: check_intake(frame, framer, watcher)


def check_intake(frame: bytes, framer: RelayFramer, watcher: core.Tracebacks) -> None:
    try:
        cut = payload.check_published(frame, MAX_EVENT_SIZE)
    except InvalidEventError:
        wire.barrier_token(frame)
        return
    if len(frame) - 1 > MAX_EVENT_SIZE:
        raise core.Finding(f"a {len(frame)}-byte frame passed a max_event_size of {MAX_EVENT_SIZE}")
    raw_tag = frame[:cut]
    if not raw_tag or b"\x00" in raw_tag or len(raw_tag) > payload.MAX_TAG_BYTES:
        raise core.Finding(f"a frame with the tag bytes {raw_tag[:60]!r} passed the intake check")
    seq = 1_000_000_001
    bus_frame = wire.HEADER.pack(seq, seq - 1) + frame
    got_seq, _, got_tag, _ = wire.split_bus_frame(bus_frame)
    if got_seq != seq or got_tag != raw_tag:
        raise core.Finding("a listener splits an accepted frame differently from the intake")
    inbox = Inbox()
    inbox.last_seq, inbox.epoch = seq - 1, seq - 1
    event = inbox.receive(bus_frame, lambda _tag: True)
    if event is None or not isinstance(event.data, dict) or event.tag != raw_tag.decode():
        raise core.Finding(f"a listener drops a frame the intake accepted: {frame[:80]!r}")
    tag, data = event.tag, event.data
    core.only_documented(lambda: event_record(seq, tag, data).raw, "the API's SSE record of an accepted event")
    for fmt in formats.FORMATS:
        core.only_documented(lambda: formats.outgoing(seq, tag, data, fmt), f"the forwarder's {fmt} record")
    reason = relay.refused_tag(tag, MINION_ID)
    try:
        _, relayed = framer.frame(frame, MAX_EVENT_SIZE)
    except InvalidEventError:
        relayed = None
    if relayed is not None:
        if reason is not None:
            raise core.Finding(f"the master relays tag {tag[:80]!r} from minion {MINION_ID!r}: {reason}")
        payload.check_published(relayed, MAX_EVENT_SIZE)
    watcher.check()


# -- control ---------------------------------------------------------------------------------

CONTROL_WORDS = (wire.VERB_PING, wire.VERB_STATS, wire.VERB_REPLAY, wire.VERB_BARRIER, wire.VERB_LINK,
                 wire.VERB_KEY, wire.VERB_FIRE_MINIONS, wire.VERB_FIRE_STATUS, wire.VERB_RELAY, b"\x81\xa5after",
                 b"\x82\xa2op\xa6accept", b"\xa2id", b"\xa6target", b"\xa3tag", b"\xa4data", b"\xa3job",
                 b"\xa5limit", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
                 core.MESSAGE_MARK, core.FRAME_MARK, b"accept_all", b"delete", b"reject", b"list",
                 cluster.VERB_CLUSTER_IMPORT, b"\xa7through", b"\xa6events", b"\xa4join", b"\xa3../")


class ControlDoors:
    """A master bus with its link's verbs and a minion bus with its relay verb, in this process, unstarted loops."""

    def __init__(self, box: core.Sandbox) -> None:
        self.context = zmq.Context()
        # A master of a fleet-wide bus (nothing listens at its cluster's address; its cluster process is not
        # started, ``source`` unset): its ``cluster_import`` verb is a door of ``ctl.ipc`` too.
        master = Node(box.inside / "m", "master", sock_dir="s", event_window=200, event_window_bytes=1 << 20,
                      journal_max_bytes=1 << 20, max_event_size=MAX_EVENT_SIZE, log_level="critical",
                      cluster={"servers": ["nats://127.0.0.1:9"]})
        minion = Node(box.inside / "n", "minion", id=MINION_ID, sock_dir="s", master="127.0.0.1",
                      publish_port=master.keys["publish_port"], ret_port=master.keys["ret_port"],
                      spool_max_events=200, max_event_size=MAX_EVENT_SIZE, log_level="critical")
        self.buses: dict[str, Bus] = {}
        self.parts: list = []
        self.dealers: dict[str, zmq.Socket] = {}
        master_settings = dataclasses.replace(master.settings, source=None)
        for name, settings, components in (("master", master_settings, cluster.components(master_settings)),
                                           ("minion", minion.settings, (MinionLink,))):
            settings.sock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            bus = Bus(settings, self.context, Loop())
            for component in components:
                self.parts.append(component(settings, self.context, bus.loop, bus))
            self.buses[name] = bus
            dealer = self.context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(bus.endpoints.ctl)
            self.dealers[name] = dealer
        self.link = self.parts[0]
        self.asked = 0

    def ask(self, frames: list[bytes]) -> tuple[bool, object] | None:
        """Send one request to the bus its verb belongs to; check the answer a well-formed one gets, and
        return the last bus's ``(ok, result)`` (``None``: a malformed request, not answered)."""
        request = frames[1:] if frames and frames[0] == b"" else frames
        verb = request[0] if request else b""
        names = ("minion",) if verb == wire.VERB_RELAY else ("master", "minion") if verb == wire.VERB_LINK \
            else ("master",)
        answer = None
        for name in names:
            answer = self._ask(name, frames, len(request) == 2)
        self.asked += 1
        if self.asked % 1000 == 0:
            self.link.machine.fire_jobs.expire(time.monotonic() + 3600)  # the daemon's timer does this
        return answer

    def _ask(self, name: str, frames: list[bytes], answered: bool) -> tuple[bool, object] | None:
        bus, dealer = self.buses[name], self.dealers[name]
        dealer.send_multipart(frames)
        if not bus.control_socket.poll(REPLY_WAIT_MS):
            raise core.Finding(f"the {name} bus's control socket never got a request")
        bus._on_control()
        if not answered:
            if dealer.poll(0):
                raise core.Finding(f"the {name} bus answered a malformed request: {dealer.recv_multipart()!r:.200}")
            return None
        if not dealer.poll(REPLY_WAIT_MS):
            raise core.Finding(f"the {name} bus did not answer the request {frames!r:.200}")
        reply = dealer.recv_multipart()
        if frames and frames[0] == b"":  # a REQ-style request (empty delimiter) is answered REQ-style
            if reply[:1] != [b""]:
                raise core.Finding(f"the {name} bus answered a REQ-style request without its delimiter")
            reply = reply[1:]
        ok, result = wire.parse_reply(reply)
        if not ok and not isinstance(result, str):
            raise core.Finding(f"the {name} bus refused with a non-text reason: {result!r:.200}")
        return ok, result

    def close(self) -> None:
        for dealer in self.dealers.values():
            dealer.close(0)
        for part in reversed(self.parts):
            part.close()
        for bus in self.buses.values():
            bus.close()
        self.context.destroy(linger=0)


@core.target("control", "eventbus.daemon.bus control verbs on ctl.ipc (ping, stats, replay, barrier, link, key, "
                        "fire_minions, fire_status, cluster_import, relay) over a real DEALER, master and minion",
             max_len=8192, per_input=5.0, words=CONTROL_WORDS, seeds=lambda: control_seeds())
def control() -> Iterator[core.OneInput]:
    box = core.Sandbox(core.sandbox_root("control"))
    with core.quiet_logs() as watcher:
        doors = ControlDoors(box)
        try:
            def run(data: bytes) -> None:
                for frames in core.messages(data)[:16]:
                    doors.ask(frames)
            yield core.checked(run, watcher, box)
        finally:
            doors.close()
            box.remove()


def control_seeds() -> list[bytes]:
    """Requests the CLI and the library send (``eventbus.bus.control``, ``admin``, ``relay``), one per seed."""
    requests = [(wire.VERB_PING, None), (wire.VERB_STATS, None), (wire.VERB_REPLAY, {"after": 0, "limit": 10}),
                (wire.VERB_REPLAY, {"after": 2 ** 63 - 1}), (wire.VERB_BARRIER, b"token"), (wire.VERB_LINK, None),
                (wire.VERB_KEY, {"op": "list"}), (wire.VERB_KEY, {"op": "accept", "id": MINION_ID}),
                (wire.VERB_KEY, {"op": "accept_all"}), (wire.VERB_KEY, {"op": "delete", "id": "web1"}),
                (wire.VERB_FIRE_MINIONS, {"tag": "t/x", "data": {"a": 1}, "target": "*"}),
                (wire.VERB_FIRE_STATUS, {"job": 1}), (wire.VERB_RELAY, {"tag": f"salt/minion/{MINION_ID}/x",
                                                                       "data": {"n": 1}}),
                (wire.VERB_RELAY, {"tag": "app/event", "data": {"k": [1, 2]}}), (b"nope", None),
                (cluster.VERB_CLUSTER_IMPORT, {"through": 3, "join": True, "events": [
                    [2, "", 0, "m2", payload.pack_frame("t/x", {"_origin": "m2"}, MAX_EVENT_SIZE)],
                    [3, "web1", 9, "m2", payload.pack_frame("t/r", {"cmd": "_minion_event", "id": "web1",
                                                                    "_origin": "m2"}, MAX_EVENT_SIZE)]]}),
                (cluster.VERB_CLUSTER_IMPORT, {"through": 4, "events": [
                    [4, "../" * 8 + "x", 1, "m2", payload.pack_frame("t/r", {}, MAX_EVENT_SIZE)]]}),
                (cluster.VERB_CLUSTER_IMPORT, {"through": 2 ** 64 - 1})]
    seeds = [core.join([wire.request(verb, args)]) for verb, args in requests]
    seeds.append(core.join([[b"", *wire.request(wire.VERB_PING)], [wire.VERB_PING], [b"a", b"b", b"c"]]))
    seeds.append(core.join([wire.request(verb, args) for verb, args in requests[:6]]))
    return seeds


def intake_seeds() -> list[bytes]:
    """Frames the library's publishers send (``payload.pack_frame``), and the barrier frame."""
    events = [("salt/job/1/new", {"fun": "test.ping", "arg": []}), ("app/x", {}), ("a", {"n": 2 ** 63, "f": 1.5}),
              (f"salt/minion/{MINION_ID}/start", {"id": MINION_ID}), ("salt/auth", {"x": None}),
              ("t\u00e9st/\u2603", {"s": "\u00fc", "b": b"\x00\x01", "l": [1, [2, {"m": True}]]}),
              ("big", {f"k{i}": i for i in range(20)})]
    seeds = [wire.publish_frame(*payload.pack_event(tag, {**data, "_stamp": "2026-01-02T03:04:05.678901"},
                                                    MAX_EVENT_SIZE, add_stamp=False)) for tag, data in events]
    seeds.append(wire.barrier_frame(b"0123456789abcdef"))
    seeds.append(b"t\x00" + msgpack.packb({1: 2, "k": b"v"}, use_bin_type=True))
    return seeds
