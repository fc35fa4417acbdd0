"""Import: the other masters' events from the fleet stream onto this master's bus, once each, in order.

One ordered consumer reads the stream from the stream seq after the last one this master took (the
master keeps it: ``daemon/cluster/component.py``, verb ``cluster_import``), skips what this master wrote
itself, and hands batches to the master, which publishes them with ``_origin`` in their data. A master
that joins the fleet for the first time starts with the first message stored since it started (a cluster
process slow to connect misses nothing fired meanwhile); the fleet's older past is on the stream, not
copied onto its bus.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import datetime, timezone
import logging
from pathlib import Path
from typing import Any

import msgpack
import nats.errors
import zmq
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus.daemon.cluster.component import VERB_CLUSTER_IMPORT
from eventbus.daemon.cluster.exporter import Counters
from eventbus.bus import control
from eventbus.cluster import records
from eventbus.cluster.settings import ClusterSettings
from eventbus.errors import EventBusError, MalformedFrameError

log = logging.getLogger(__name__)

BATCH = 512
GATHER = 0.002       # seconds a batch waits for more messages once it has one
IDLE = 1.0
JOIN_WAIT = 2.0      # seconds to wait for the first message since a new member's start


class Importer:
    """The fleet stream after this master's last imported seq, onto its bus."""

    def __init__(self, settings: ClusterSettings, master_id: str, sock_dir: Path, counters: Counters) -> None:
        self.settings = settings
        self.master_id = master_id
        self.counters = counters
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cluster-import")
        self.client = control.Client(zmq.Context.instance(), sock_dir)
        self.through = 0
        self.joined_at = 0.0  # unix time a master new to the fleet imports from (its start; set by the service)
        self.said: set[str] = set()

    async def _hand(self, events: list[list], through: int, join: bool = False) -> dict:
        loop = asyncio.get_running_loop()
        args: dict = {"through": through, "events": events}
        if join:
            args["join"] = True
        while True:
            try:
                return await loop.run_in_executor(self.pool, self.client.request, VERB_CLUSTER_IMPORT, args, 10.0)
            except EventBusError as exc:
                self._once("master", f"cluster: the master did not take imported events ({exc}); retrying")
                await asyncio.sleep(0.5)

    def _once(self, kind: str, message: str) -> None:
        if kind not in self.said:
            self.said.add(kind)
            log.error("%s", message)

    async def start_at(self, js: Any) -> int:
        """The stream seq after which to read: the master's, or, for a master new to the fleet, the seq before
        the first message stored since ``joined_at`` (its start)."""
        answer = await self._hand([], 0)
        self.through = int(answer["through"])
        if not answer.get("joined"):
            answer = await self._hand([], await self._seq_before(js, self.joined_at), join=True)
            self.through = int(answer["through"])
        return self.through

    async def _seq_before(self, js: Any, since: float) -> int:
        """The stream seq before the first message stored at or after unix time ``since`` (the last seq when
        there is none)."""
        last = (await js.stream_info(self.settings.stream)).state.last_seq
        sub = await js.subscribe(self.settings.subject_prefix + ".>", stream=self.settings.stream,
                                 ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                                                       opt_start_time=datetime.fromtimestamp(since, timezone.utc)))
        try:
            first = await sub.next_msg(timeout=JOIN_WAIT)
            return max(0, first.metadata.sequence.stream - 1)
        except nats.errors.TimeoutError:
            return last
        finally:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError):
                pass

    def _event(self, msg: Any) -> list | None:
        seq = msg.metadata.sequence.stream
        try:
            event = records.decode(seq, msg.data, msg.headers)
        except MalformedFrameError as exc:
            self._once("malformed", f"cluster: skipped a stream message no master wrote ({exc}); further ones "
                                    "are skipped without a line")
            return None
        if event.origin == self.master_id:
            return None
        minion, relay_seq = records.relayed(event.identity, event.data) or ("", 0)
        try:
            frame = event.tag.encode() + b"\x00" + msgpack.packb(event.data)
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            self._once("pack", f"cluster: skipped stream message {seq}: {exc}")
            return None
        return [seq, minion, relay_seq, event.origin, frame]

    async def run(self, js: Any) -> None:
        """Read and hand over forever (re-subscribing after the cluster was away)."""
        await self.start_at(js)
        while True:
            try:
                sub = await js.subscribe(self.settings.subject_prefix + ".>", stream=self.settings.stream,
                                         ordered_consumer=True,
                                         config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                                               opt_start_seq=self.through + 1))
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                log.debug("cluster: cannot read the stream yet: %s", exc)
                await asyncio.sleep(1.0)
                continue
            try:
                await self._read(sub)
            except (nats.errors.Error, OSError) as exc:
                log.debug("cluster: stream reading stopped (%s); resuming after %d", exc, self.through)
            finally:
                try:
                    await sub.unsubscribe()
                except (nats.errors.Error, OSError):
                    pass
            await asyncio.sleep(0.2)

    async def _read(self, sub: Any) -> None:
        while True:
            try:
                first = await sub.next_msg(timeout=IDLE)
            except nats.errors.TimeoutError:
                continue
            batch = [first]
            deadline = asyncio.get_running_loop().time() + GATHER
            while len(batch) < BATCH:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0 and sub.pending_msgs == 0:
                    break
                try:
                    batch.append(await sub.next_msg(timeout=max(left, 0.0005)))
                except nats.errors.TimeoutError:
                    break
            await self._take(batch)

    async def _take(self, batch: list) -> None:
        events = []
        through = self.through
        for msg in batch:
            seq = msg.metadata.sequence.stream
            if seq <= through:
                continue  # a redelivery after a consumer reset
            if seq > through + 1 and through:
                log.warning("cluster: stream seqs %d..%d are no longer on the stream (its limits); this master "
                            "never had them", through + 1, seq - 1)
            through = seq
            event = self._event(msg)
            if event is not None:
                events.append(event)
        if through == self.through:
            return
        answer = await self._hand(events, through)
        self.counters.imported += int(answer.get("published", 0))
        self.counters.duplicates += int(answer.get("duplicates", 0))
        self.through = int(answer["through"])

    def close(self) -> None:
        self.client.close()
        self.pool.shutdown(wait=False)
