"""The master's side of its cluster process: starts it, and takes the fleet's events it imports.

With ``cluster`` set, the master runs ``python -m eventbus.daemon.cluster MASTER_CONFIG``
(``eventbus.daemon.cluster.service``), which exports this bus to the stream and reads the other masters'
events from it. Those come back here through the control verb ``cluster_import``: the master publishes
each once (a stream seq at or below the last one taken is skipped, so a cluster process that restarts
mid-batch adds nothing twice), notes them in the origin index so they are never exported again, and keeps
the last stream seq taken in ``cachedir/cluster/imported``. A relayed event this master already has (hot
mode: the minion relayed it here too) is skipped; one it has not yet counts as relayed here, so the
minion's own copy, when it arrives, is a duplicate.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

import zmq

from eventbus.daemon.bus import Bus
from eventbus.daemon.childproc import Supervised
from eventbus.daemon.cluster.origins import IMPORT, OriginWriter
from eventbus.daemon.cluster.seqfile import SeqFile
from eventbus.daemon.loop import Loop
from eventbus.bus import payload
from eventbus.cluster import records
from eventbus.config import MasterConfig
from eventbus.errors import EventBusError

log = logging.getLogger(__name__)

VERB_CLUSTER_IMPORT = b"cluster_import"
MAX_IMPORT_EVENTS = 4096


def imported_path(settings: MasterConfig) -> Path:
    return settings.cachedir / "cluster" / "imported"


def origins_dir(settings: MasterConfig) -> Path:
    return settings.cachedir / "cluster" / "origins"


def exported_path(settings: MasterConfig) -> Path:
    return settings.cachedir / "cluster" / "exported"


class ClusterLink:
    """The cluster process and the ``cluster_import`` verb of a master with ``cluster``."""

    def __init__(self, settings: MasterConfig, loop: Loop, bus: Bus, origins: OriginWriter,
                 take_relayed: Callable[[str, int], bool]) -> None:
        self.settings = settings
        self.bus = bus
        self.origins = origins
        self.take_relayed = take_relayed
        self.imported = SeqFile(imported_path(settings))
        exported = SeqFile(exported_path(settings))
        if not exported.exists():
            # Joining the fleet: this master's events from now on go to the stream, not its whole journal.
            exported.store(bus.seq)
        self.refused = 0
        bus.register_verb(VERB_CLUSTER_IMPORT, self._import)
        self.child: Supervised | None = None
        if settings.source is None:
            log.error("cluster: the master was started without a config file; its cluster process cannot read it")
            return
        self.child = Supervised("cluster process", [sys.executable, "-m", "eventbus.daemon.cluster",
                                                    str(settings.source)], loop)
        self.child.start()

    def _import(self, args: Any) -> dict:
        """``{"through": S, "events": [[stream seq, relayed minion id or "", relay seq, origin, frame]]}``:
        publish the events after the last stream seq taken, then take ``through`` as the last (``"join":
        true``: the first one of a master new to the fleet, kept even when it is 0)."""
        if not isinstance(args, dict) or not _stream_seq(args.get("through")) \
                or not isinstance(args.get("events", []), list) or len(args.get("events", [])) > MAX_IMPORT_EVENTS:
            raise ValueError("expected {through: stream seq, events: [[stream seq, minion, relay seq, origin, "
                             "frame], ...]}")
        last = self.imported.value
        frames: list[bytes] = []
        entries: list[tuple[int, int, int, str]] = []
        skipped = 0
        first = self.bus.seq + 1
        for item in args.get("events", []):
            if not (isinstance(item, list) and len(item) == 5 and _stream_seq(item[0])
                    and isinstance(item[1], str) and isinstance(item[2], int) and isinstance(item[3], str)
                    and isinstance(item[4], bytes)):
                raise ValueError("an imported event is [stream seq, minion, relay seq, origin, frame]")
            stream_seq, minion, relay_seq, origin, frame = item
            if minion and not records.is_relay(minion, relay_seq):
                # A minion id names a file of the master's (its relay seqs): never a path, never past u64.
                raise ValueError(f"an imported event names no minion's relay seq: {minion[:80]!r}:{relay_seq}")
            if stream_seq <= last:
                continue
            last = stream_seq
            if minion and not self.take_relayed(minion, relay_seq):
                skipped += 1
                continue
            try:
                payload.check_published(frame, self.settings.max_event_size)
            except EventBusError as exc:
                self.refused += 1
                log.error("cluster: refused stream message %d from %s: %s", stream_seq, origin, exc)
                continue
            entries.append((first + len(frames), IMPORT, stream_seq, origin))
            frames.append(frame)
        if entries:
            self.origins.note(entries)  # before the journal has them: never exported again
        if frames:
            self.bus.publish_frames(frames)
        through = max(last, args["through"])
        if through != self.imported.value or (args.get("join") and not self.imported.exists()):
            self.imported.store(through)  # ``join``: the first position, which may be 0 (an empty stream)
        return {"through": self.imported.value, "joined": self.imported.exists(), "published": len(frames),
                "duplicates": skipped}

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
        self.origins.close()


def _stream_seq(value: Any) -> bool:
    return type(value) is int and 0 <= value <= records.MAX_SEQ


def components(settings: MasterConfig) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The master link's and the cluster link's factories for ``runner.serve`` (the cluster one after it)."""
    from eventbus.daemon.link.master import MasterLink

    origins = OriginWriter(origins_dir(settings))
    made: dict[str, MasterLink] = {}

    def link(settings: MasterConfig, context: zmq.Context, loop: Loop, bus: Bus) -> MasterLink:
        made["link"] = MasterLink(settings, context, loop, bus, origins=origins)
        return made["link"]

    def cluster(settings: MasterConfig, context: zmq.Context, loop: Loop, bus: Bus) -> ClusterLink:
        return ClusterLink(settings, loop, bus, origins, made["link"].machine.take_imported)

    return link, cluster
