"""Export: every event of this master's journal to the fleet stream, in order, once (SPEC 12).

The exporter reads the journal after its saved position (``cachedir/cluster/exported``), so a master that
was cut off from the cluster, or stopped, catches up in order when it can. Each event gets its fleet
identity from the origin index (``origins``): a relayed event ``<minion id>:<relay seq>``, an imported one
is skipped (it came from the stream), any other ``<master id>:<seq>``.

One batch at a time goes out pipelined on one connection, and is retried from its first unacknowledged
event, with the same identities, until JetStream has acknowledged all of it; only then does the position
move. JetStream drops a repeated ``Nats-Msg-Id`` within its duplicate window. Past it the masters keep
their own record: per identity prefix, the ranges of numbers written (``ranges.Ranges``) in the key-value
bucket ``<stream>_ids``, updated about once a second, and consulted for events older than half the
stream's duplicate window (a catch-up after an outage), which are then not sent again.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import msgpack
import nats.errors
import nats.js.errors

from eventbus.daemon.cluster.origins import IMPORT, RELAY, OriginReader
from eventbus.daemon.cluster.ranges import Ranges
from eventbus.daemon.cluster.seqfile import SeqFile
from eventbus.bus import wire
from eventbus.cluster import jetstream, records
from eventbus.cluster.settings import ClusterSettings
from eventbus.errors import MalformedFrameError
from eventbus.forwarding.formats import event_time
from eventbus.journal.reader import JournalReader

log = logging.getLogger(__name__)

BATCH = 512
DEPTH = 4  # batches in flight
BATCH_BYTES = 4 << 20
ACK_TIMEOUT = 5.0
RETRY_FIRST, RETRY_MAX = 0.2, 2.0
RANGES_EVERY = 1.0


def ids_bucket(settings: ClusterSettings) -> str:
    """The key-value bucket of the written identity ranges."""
    return f"{settings.stream}_ids"


def ids_key(who: str) -> str:
    """The bucket key of identity prefix ``who`` (any minion or master id: hex keeps it a valid key)."""
    return "w." + who.encode().hex()


async def _acked(futures: list[Any]) -> None:
    """Wait until every ack future of a batch is done, ``ACK_TIMEOUT`` at most. Acks come in order on one
    connection: the last one is waited for first, then whatever is still open."""
    pending = [f for f in futures if isinstance(f, asyncio.Future)]
    if not pending:
        return
    deadline = time.monotonic() + ACK_TIMEOUT
    await asyncio.wait(pending[-1:], timeout=ACK_TIMEOUT)
    left = [f for f in pending if not f.done()]
    if left:
        await asyncio.wait(left, timeout=max(0.0, deadline - time.monotonic()))


@dataclass(slots=True)
class Item:
    """One event to write: its local seq, message and identity."""

    seq: int
    subject: str
    body: bytes
    headers: dict[str, str]
    who: str
    number: int
    old: bool


@dataclass
class Sent:
    """A batch in flight: its items, the seq the position moves to, each item's ack future (or error), and
    how many of its events belong to the master's earlier runs (``lag``)."""

    items: list[Item]
    through: int
    futures: list[Any]
    earlier: int


@dataclass
class Counters:
    """What ``eventbus status`` shows of this master's part of the fleet bus."""

    exported: int = 0
    imported: int = 0
    duplicates: int = 0
    refused: int = 0


class Exporter:
    """The journal after ``position``, to the stream."""

    def __init__(self, settings: ClusterSettings, master_id: str, journal_dir: Path, position: SeqFile,
                 origins_dir: Path, counters: Counters) -> None:
        self.settings = settings
        self.master_id = master_id
        self.position = position
        self.at = position.load()
        self.reader = JournalReader(journal_dir)
        self.origins = OriginReader(origins_dir, self.at)
        self.counters = counters
        self.written: dict[str, Ranges] = {}    # ranges written since the last flush to the bucket
        self.known: dict[str, Ranges] = {}      # ranges read from the bucket during a catch-up
        self.flushed_at = time.monotonic()
        self.wake = asyncio.Event()
        self.bus_seq = 0      # the master bus's newest seq and its run's epoch (from its frames' headers)
        self.bus_epoch = 0
        self.earlier = 0      # events of earlier runs of the master after ``at``, counted once at start
        self.read_earlier = 0
        self.read_at = self.at  # the position the next batch is read after (ahead of ``at`` while in flight)
        self.problem: BaseException | None = None
        self.subjects: dict[str, str] = {}
        self.check_after = jetstream.DUPLICATE_WINDOW / 2  # set from the stream's own window (``service``)
        self._lost_said = False

    # -- reading ------------------------------------------------------------------------

    def next_batch(self, after: int) -> tuple[list[Item], int]:
        """The events after seq ``after`` to write next, and the seq the position moves to once they are."""
        read = self.reader.read(after, BATCH, BATCH_BYTES)
        if read.lost and not self._lost_said:
            self._lost_said = True
            log.error("cluster: %d events left the journal (its bounds) before they were exported; they are "
                      "not on the fleet stream", read.lost)
        if not read.events:
            return [], after
        through = read.events[-1][0]
        self.read_earlier = sum(1 for seq, _ in read.events if seq <= self.bus_epoch)
        found = self.origins.lookup(through)
        items: list[Item] = []
        check_old: bool | None = None
        for seq, frame in read.events:
            origin = found.get(seq)
            if origin is not None and origin[0] == IMPORT:
                continue
            try:
                _, _, raw_tag, raw_data = wire.split_bus_frame(frame)
                tag = raw_tag.decode()
                data = msgpack.unpackb(raw_data)
            except (MalformedFrameError, UnicodeDecodeError, ValueError, msgpack.UnpackException):
                self.counters.refused += 1
                log.error("cluster: journal record %d is not an event; not exported", seq)
                continue
            if not isinstance(data, dict):
                continue
            if origin is not None and origin[0] == RELAY:
                who, number = origin[2], origin[1]
                identity = records.relay_identity(who, number)
            else:
                who, number = self.master_id, seq
                identity = records.own_identity(who, seq)
            if check_old is None:  # the batch's first event says whether it is a catch-up
                check_old = (datetime.now(timezone.utc) - event_time(data)).total_seconds() > self.check_after
            subject = self.subjects.get(tag)
            if subject is None:
                if len(self.subjects) > 10_000:
                    self.subjects.clear()
                subject = self.subjects[tag] = records.subject_for(self.settings.subject_prefix, tag)
            items.append(Item(seq, subject,
                              records.body(seq, tag, data), records.headers(identity, self.master_id),
                              who, number, bool(check_old)))
        return items, through

    def count_earlier(self) -> None:
        """Count the journal's events after ``at`` of the master's earlier runs (for ``lag``; once, at start)."""
        after, count = self.at, 0
        while after < self.bus_epoch:
            read = self.reader.read(after, 10_000, 64 << 20)
            kept = [seq for seq, _ in read.events if seq <= self.bus_epoch]
            count += len(kept)
            if not read.events or len(kept) < len(read.events) or read.at_end:
                break
            after = read.events[-1][0]
        self.earlier = count

    def lag(self) -> int:
        """Events of this master's journal not yet on the stream (imported ones count too: a bound, not a
        tally; 0 once caught up)."""
        if self.bus_seq <= self.at:
            return 0
        if self.at >= self.bus_epoch:
            return self.bus_seq - self.at
        return self.earlier + self.bus_seq - self.bus_epoch

    # -- writing ------------------------------------------------------------------------

    async def run(self, js: Any, kv: Any, health: Callable[[str | None], None]) -> None:
        """Write forever; ``health(None)`` after a write the cluster took, ``health(reason)`` while it takes none.

        Up to ``DEPTH`` batches are in flight on the connection (in order); the position moves past a batch
        once it and every batch before it are acknowledged. A batch with an event not acknowledged is
        written again from that event, with every later batch, before anything new is read.
        """
        inflight: collections.deque[Sent] = collections.deque()
        self.read_at = self.at
        while True:
            while len(inflight) < DEPTH:
                items, through = self.next_batch(self.read_at)
                if through == self.read_at:
                    break
                if items and items[0].old:
                    items = await self._not_yet_written(kv, items)
                inflight.append(Sent(items, through, await self._send(js, items), self.read_earlier))
                self.read_at = through
            if not inflight:
                await self._flush_ranges(kv)
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
                continue
            sent = inflight.popleft()
            await _acked(sent.futures)
            left = self._settle(sent.items, sent.futures)
            if left:
                # Everything from the first event not acknowledged, in order: this batch's rest and the later
                # batches (their acknowledged events come back as duplicates, stored once).
                for later in inflight:
                    for future in later.futures:
                        if isinstance(future, asyncio.Future) and not future.done():
                            future.cancel()
                    left += later.items
                last = inflight[-1] if inflight else sent
                earlier = sent.earlier + sum(batch.earlier for batch in inflight)
                inflight.clear()
                await self._write(js, left, health)
                self._moved(last.through, earlier)
                self.read_at = self.at
            else:
                health(None)
                self._moved(sent.through, sent.earlier)
            if time.monotonic() - self.flushed_at > RANGES_EVERY:
                await self._flush_ranges(kv)

    def _moved(self, through: int, earlier: int) -> None:
        """Every event up to ``through`` is on the stream: the position moves there."""
        self.earlier = max(0, self.earlier - earlier)
        self.at = through
        self.position.store(through)
        self.origins.forget_before(through)

    async def _send(self, js: Any, items: list[Item]) -> list[Any]:
        """Publish ``items`` pipelined: per item its ack's future, ``None`` (too big to send) or the error."""
        futures: list[Any] = []
        for item in items:
            try:
                futures.append(await js.publish_async(item.subject, item.body, headers=item.headers))
            except nats.errors.MaxPayloadError:
                futures.append(None)
            except (nats.errors.Error, OSError) as exc:
                futures.append(exc)
        return futures

    def _settle(self, items: list[Item], futures: list[Any]) -> list[Item]:
        """Count what was acknowledged, in order; the items from the first one that was not (cancelling the
        rest of their futures), or ``[]``."""
        for done, (item, future) in enumerate(zip(items, futures)):
            if future is None:
                self.counters.refused += 1
                log.error("cluster: event %d (%s) is bigger than the cluster's max_payload; not exported",
                          item.seq, item.subject)
                continue
            if not isinstance(future, asyncio.Future) or not future.done() or future.exception() is not None:
                self.problem = future if isinstance(future, BaseException) else (
                    future.exception() if isinstance(future, asyncio.Future) and future.done()
                    else asyncio.TimeoutError())
                for rest in futures[done:]:
                    if isinstance(rest, asyncio.Future) and not rest.done():
                        rest.cancel()
                self._note_written([it for it, f in zip(items[:done], futures) if f is not None])
                return items[done:]
            if future.result().duplicate:
                self.counters.duplicates += 1
            else:
                self.counters.exported += 1
        self._note_written(items)
        return []

    def _note_written(self, items: list[Item]) -> None:
        """Add the identities of ``items`` (all acknowledged) to the ranges to save, a run at a time."""
        written = self.written
        who, low, high = None, 0, -2
        for item in items:
            if item.who == who and item.number == high + 1:
                high += 1
                continue
            if who is not None:
                ranges = written.get(who)
                if ranges is None:
                    ranges = written[who] = Ranges()
                ranges.add(low, high)
            who, low, high = item.who, item.number, item.number
        if who is not None:
            ranges = written.get(who)
            if ranges is None:
                ranges = written[who] = Ranges()
            ranges.add(low, high)

    async def _write(self, js: Any, items: list[Item], health: Callable[[str | None], None]) -> None:
        """Write ``items`` in order, again and again from the first one not acknowledged, until all are."""
        pause = RETRY_FIRST
        failing_since: float | None = None
        while items:
            futures = await self._send(js, items)
            await _acked(futures)
            left = self._settle(items, futures)
            if not left:
                health(None)
                return
            if len(left) < len(items):
                health(None)
                pause, failing_since = RETRY_FIRST, None
                items = left
                continue
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since >= 2 * RETRY_MAX:
                health(jetstream.reason(self.problem or asyncio.TimeoutError(), self.settings))
            await asyncio.sleep(pause)
            pause = min(RETRY_MAX, pause * 2)

    # -- own de-duplication past the stream's window ------------------------------------------

    async def _not_yet_written(self, kv: Any, items: list[Item]) -> list[Item]:
        """``items`` without those the bucket says the stream already holds (counted as duplicates)."""
        for who in {item.who for item in items} - set(self.known):
            try:
                entry = await kv.get(ids_key(who))
                self.known[who] = Ranges.unpack(entry.value or b"")
            except nats.js.errors.KeyNotFoundError:
                self.known[who] = Ranges()
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("cluster: could not read the written identities of %s (%s); JetStream's duplicate "
                            "window alone guards this catch-up", who, jetstream.reason(exc, self.settings))
                self.known[who] = Ranges()
        kept = []
        for item in items:
            if item.number in self.known[item.who]:
                self.counters.duplicates += 1
            else:
                kept.append(item)
        if len(self.known) > 4096:
            self.known.clear()
        return kept

    async def _flush_ranges(self, kv: Any) -> None:
        """Merge the ranges written since the last flush into the bucket (compare-and-set, retried)."""
        self.flushed_at = time.monotonic()
        written, self.written = self.written, {}
        for who, ranges in written.items():
            key = ids_key(who)
            for _ in range(8):
                try:
                    try:
                        entry = await kv.get(key)
                        merged = Ranges.unpack(entry.value or b"")
                        if not merged.merge(ranges):
                            break
                        await kv.update(key, merged.pack(), last=entry.revision)
                    except nats.js.errors.KeyNotFoundError:
                        await kv.create(key, ranges.pack())
                    break
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue  # another master wrote it meanwhile: merge again
                except (nats.errors.Error, asyncio.TimeoutError, nats.js.errors.Error) as exc:
                    log.debug("cluster: identity ranges of %s not saved yet: %s", who, exc)
                    self.written.setdefault(who, Ranges()).merge(ranges)
                    break
            if who in self.known:
                self.known[who].merge(ranges)
