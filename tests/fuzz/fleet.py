"""What the fleet-wide bus reads that others wrote: a stream message, and a clustered master's own files.

- ``fleet_record``: one stream message (its body and headers), as anyone with write access to the fleet's
  NATS subjects can publish it, through the importer (``eventbus.cluster.records.decode`` and
  ``daemon/cluster/importer.py``'s framing), then handed to a real clustered master bus through its
  ``cluster_import`` verb on ``ctl.ipc`` (``daemon/cluster/component.py``: the import check, the relay
  seqs of the minion it names, the origin index, the journal). An input is messages: the first frame of
  the first is the body, every other frame a ``name: value`` header. Allowed: the message refused (a
  documented error, or skipped). Not allowed: any other exception, an event framed without ``_origin``
  equal to the ``Eventbus-Origin`` header, a relayed identity taken for another minion, the master
  refusing what its own importer handed it, a file written outside the master's directories.
- ``fleet_state``: a clustered master's side files read back after a corrupt disk: the origin index
  (``daemon/cluster/origins.py``: parts named ``<seq>.ids``) and an identity-ranges value as the key-value
  bucket holds it (``daemon/cluster/ranges.py``). An input is ``[name, contents]`` files, the last message's
  first frame the ranges value. Allowed: records skipped. Not allowed: an exception, a record of a kind that
  does not exist or at or below the reader's position, ranges that are not sorted and disjoint.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

from eventbus.bus import payload, wire
from eventbus.cluster import records
from eventbus.cluster.settings import ClusterSettings
from eventbus.daemon.cluster import origins
from eventbus.daemon.cluster.component import VERB_CLUSTER_IMPORT
from eventbus.daemon.cluster.exporter import Counters
from eventbus.daemon.cluster.importer import Importer
from eventbus.daemon.cluster.ranges import Ranges
from eventbus.errors import InvalidEventError
from tests.fuzz import core
from tests.fuzz.bus import ControlDoors

MAX_EVENT = 1 << 20
CLIMB = "../" * 8 + "x"  # from in/m/var/cache/eventbus/master/relay/taken/ to in/.. (the sandbox sees it)


def _message(data: bytes, stream_seq: int) -> SimpleNamespace:
    first, *rest = core.messages(data)
    frames = first + [frame for message in rest for frame in message]
    headers = {}
    for frame in frames[1:]:
        name, _, value = frame.decode("utf-8", "replace").partition(": ")
        headers[name] = value
    return SimpleNamespace(data=frames[0], headers=headers or None,
                           metadata=SimpleNamespace(sequence=SimpleNamespace(stream=stream_seq)))


def check_record(importer: Importer, doors: ControlDoors, data: bytes) -> None:
    doors.stream_seq += 1
    message = _message(data, doors.stream_seq)
    made = core.only_documented(lambda: importer._event(message), "the importer's framing")
    if made is None or isinstance(made, Exception):
        return
    seq, minion, relay_seq, origin, frame = made
    if origin != message.headers.get(records.HEADER_ORIGIN) or origin == importer.master_id:
        raise core.Finding(f"imported with origin {origin!r}, header {message.headers!r}")
    answer = doors.ask(wire.request(VERB_CLUSTER_IMPORT, {"through": seq, "events": [made]}))
    if answer is None or not answer[0]:
        raise core.Finding(f"the master refused what its importer handed it: {answer!r:.300}")
    try:
        payload.check_published(frame, MAX_EVENT)
    except InvalidEventError:
        return  # the master refuses it (one log line); nothing else is hurt
    except Exception as exc:  # noqa: BLE001 - exactly what the target looks for
        raise core.Finding(f"the master's check of an imported frame raised {exc!r}") from exc
    data_map = payload.unpack_data(frame.partition(b"\x00")[2])
    if data_map.get("_origin") != origin:
        raise core.Finding(f"an imported event's _origin is {data_map.get('_origin')!r}, not {origin!r}")
    if minion and (data_map.get("id") != minion or records.split_identity(
            message.headers.get(records.HEADER_ID, "")) != (minion, relay_seq)):
        raise core.Finding(f"relayed identity {minion}:{relay_seq} for an event of {data_map.get('id')!r}")
    if minion and relay_seq not in doors.link.machine.seqs.taken(minion):
        raise core.Finding(f"relayed identity {minion}:{relay_seq} imported but not taken as that minion's")


def record_seeds() -> list[bytes]:
    """Stream messages as masters write them: a master's own event, a relayed one, odd tags."""
    seeds = []
    for identity, origin, tag, data in (
            ("m1:1796000000000001", "m1", "salt/job/1/ret", {"ok": True, "_stamp": "2026-12-06T09:00:00.000001"}),
            ("web1:17", "m2", "myco/deploy/done", {"id": "web1", "tag": "myco/deploy/done", "data": {"app": "x"},
                                                   "cmd": "_minion_event", "_stamp": "2026-12-06T09:00:00.000002"}),
            ("m1:5", "m1", "a b/*/>", {"n": [1, 2, {"x": None}]}),
            # What tests/integration/test_cluster_bus.py forges (F20): a path for a minion id (climbing from the
            # master's relay-seq directory to beside the sandbox's ``in``), a seq past u64.
            (f"{CLIMB}:5", "m9", "t/forged", {"id": CLIMB, "cmd": "_minion_event", "data": {}}),
            ("web1:99999999999999999999", "m9", "t/forged", {"id": "web1", "cmd": "_minion_event", "data": {}})):
        headers = records.headers(identity, origin)
        seeds.append(core.join([[records.body(5, tag, data), *(f"{k}: {v}".encode() for k, v in headers.items())]]))
    return seeds


@core.target("fleet_record", "eventbus.cluster.records.decode and the importer's framing of a fleet stream message, "
                             "then the master's import check",
             max_len=8192, per_input=2.0, seeds=record_seeds,
             words=(b"Nats-Msg-Id: ", b"Eventbus-Origin: ", b'"tag"', b'"data"', b'"seq"', b'"_minion_event"',
                    b'"cmd"', b'"id"', b"web1:", core.MESSAGE_MARK, core.FRAME_MARK))
def fleet_record() -> Iterator[core.OneInput]:
    with core.guarded("fleet_record") as (box, watcher):
        importer = Importer(ClusterSettings(), "self", box.inside, Counters())
        doors = ControlDoors(box)
        doors.stream_seq = 0
        try:
            yield core.checked(lambda data: check_record(importer, doors, data), watcher, box)
        finally:
            doors.close()
            importer.close()


# -- a clustered master's own files --------------------------------------------------------------------

def check_state(directory: Path, data: bytes) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    messages = core.messages(data)[:9]
    raw_ranges = messages[-1][0] if len(messages) > 1 else b""
    for frames in messages[:-1] if len(messages) > 1 else messages:
        name = frames[0].replace(b"/", b"_").replace(b"\x00", b"_")[:200] or b"_"
        if name in (b".", b".."):
            name = b"_"
        with open(os.path.join(os.fsencode(directory), name), "wb") as out:
            out.write(b"".join(frames[1:]))
    for after in (0, 20):
        found = origins.OriginReader(directory, after).lookup(1 << 63)
        for seq, (kind, number, who) in found.items():
            if seq <= after or kind not in (origins.RELAY, origins.IMPORT) or number < 0 or not isinstance(who, str):
                raise core.Finding(f"origin record {seq}: {(kind, number, who)!r} after {after}")
    ranges = Ranges.unpack(raw_ranges)
    pairs = ranges.pairs()
    if any(low > high for low, high in pairs) or any(a[1] + 1 >= b[0] for a, b in zip(pairs, pairs[1:])):
        raise core.Finding(f"ranges not sorted and disjoint: {pairs[:10]}")


def state_seeds() -> list[bytes]:
    """An origin index the master writes (two parts) and a bucket value the exporter writes."""
    root = core.sandbox_root("fleet-state-seeds")
    shutil.rmtree(root, ignore_errors=True)
    old, origins.PART_BYTES = origins.PART_BYTES, 40
    try:
        writer = origins.OriginWriter(root)
        writer.note([(10, origins.RELAY, 100, "web1"), (11, origins.RELAY, 101, "web1")])
        writer.note([(12, origins.IMPORT, 7, "m2")])
        writer.note([(30, origins.RELAY, 102, "web1")])
        writer.close()
    finally:
        origins.PART_BYTES = old
    files = [[path.name.encode(), path.read_bytes()] for path in sorted(root.iterdir())]
    shutil.rmtree(root, ignore_errors=True)
    return [core.join([*files, [Ranges([(1, 5), (9, 9)]).pack()]]), core.join([[Ranges([(0, 3)]).pack()]])]


@core.target("fleet_state", "eventbus.daemon.cluster origins (the origin index) and ranges (identity ranges) read "
                            "back from arbitrary files and values",
             max_len=8192, per_input=2.0, seeds=state_seeds,
             words=(b"00000000000000000010.ids", b".ids", b"\x00" * 8, b"\x01", b"\x02", b"\x91\x92", b"\xcf",
                    core.MESSAGE_MARK, core.FRAME_MARK))
def fleet_state() -> Iterator[core.OneInput]:
    with core.guarded("fleet_state") as (box, watcher):
        yield core.checked(lambda data: check_state(box.inside / "o", data), watcher, box)
