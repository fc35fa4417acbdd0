"""The master's cluster process: its bus to the fleet stream and the fleet's events onto its bus (SPEC 12).

Run by the master (``eventbus.daemon.cluster.component``) as ``python -m eventbus.daemon.cluster
MASTER_CONFIG``. One asyncio loop: it connects to the cluster (again and again while it cannot), makes the
stream and the identity bucket when missing, then runs the exporter and the importer. While the cluster
cannot be reached or takes no writes the master goes on serving; this process logs it once, fires
``eventbus/cluster/down`` ``{"error"}``, and ``eventbus/cluster/up`` when it is back. A status file
(``eventbus.systemstatus.cluster_status_path``) holds the state and the counts for ``eventbus status``
and ``/metrics``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import nats.errors
import nats.js.errors
import zmq
import zmq.asyncio
from nats.js.api import KeyValueConfig, StorageType

from eventbus.daemon.childproc import MASTER_PID_ENV
from eventbus.daemon.cluster.component import exported_path, origins_dir
from eventbus.daemon.cluster.exporter import Counters, Exporter, ids_bucket
from eventbus.daemon.cluster.seqfile import SeqFile
from eventbus.daemon.cluster.importer import Importer
from eventbus import config, logsetup, systemstatus
from eventbus.bus import control, wire
from eventbus.cloudevents.jsonfile import write_atomic
from eventbus.cluster import jetstream
from eventbus.errors import ClusterError, EventBusError
from eventbus.event import MasterEvent

log = logging.getLogger(__name__)

DOWN_TAG = "eventbus/cluster/down"
UP_TAG = "eventbus/cluster/up"
STATUS_EVERY = 1.0
RETRY_CONNECT = 2.0
STOP_GRACE = 5.0  # seconds the process may take to stop once told; then it exits all the same


class ClusterService:
    """One master's export and import, and its up/down state."""

    def __init__(self, settings: config.MasterConfig) -> None:
        assert settings.cluster is not None
        self.settings = settings
        self.cluster = settings.cluster
        self.master_id = settings.id
        self.counters = Counters()
        self.state = "down"
        self.error: str | None = "connecting"
        self.announced: str | None = None  # the state last fired as an event
        self.status_path = systemstatus.cluster_status_path(settings)
        self.started = time.time()
        self.exporter = Exporter(self.cluster, self.master_id, settings.journal_dir, SeqFile(exported_path(settings)),
                                 origins_dir(settings), self.counters)
        self.importer = Importer(self.cluster, self.master_id, settings.sock_dir, self.counters)
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cluster-fire")
        self.handle: MasterEvent | None = None
        self.stopping = asyncio.Event()

    # -- state -----------------------------------------------------------------------------

    def health(self, problem: str | None) -> None:
        """The cluster took a write (``None``) or has taken none for a while (the reason)."""
        if problem is None:
            if self.state != "up":
                self.state, self.error = "up", None
                log.warning("cluster: writing to %s again (stream %s)", ", ".join(self.cluster.servers),
                            self.cluster.stream) if self.announced == "down" else \
                    log.info("cluster: joined the fleet stream %s on %s", self.cluster.stream,
                             ", ".join(self.cluster.servers))
                self._announce("up", {})
            return
        if self.state != "down" or self.error != problem:
            first = self.state != "down" or self.announced != "down"
            self.state, self.error = "down", problem
            if first:
                log.error("cluster: cannot reach the fleet stream %s on %s: %s; serving this master's bus alone, "
                          "its events go to the stream when the cluster is back", self.cluster.stream,
                          ", ".join(self.cluster.servers), problem)
            self._announce("down", {"error": problem})

    def _announce(self, state: str, data: dict) -> None:
        self.write_status()  # before the event: whoever sees the event sees the state
        if self.announced == state:
            return
        self.announced = state
        self.pool.submit(self._fire, DOWN_TAG if state == "down" else UP_TAG, data)

    def _fire(self, tag: str, data: dict) -> None:
        try:
            if self.handle is None:
                self.handle = MasterEvent(self.settings.sock_dir, opts=self.settings, listen=False)
            for _ in range(5):
                if self.handle.fire_event(data, tag, timeout=1000):
                    return
            log.error("cluster: the master bus did not take %s", tag)
        except EventBusError as exc:
            log.error("cluster: cannot fire %s: %s", tag, exc)

    def write_status(self) -> None:
        status = {"pid": os.getpid(), "running": not self.stopping.is_set(), "state": self.state,
                  "error": self.error, "exported": self.counters.exported, "imported": self.counters.imported,
                  "duplicates": self.counters.duplicates, "export_lag": self.exporter.lag(),
                  "refused": self.counters.refused, "stream": self.cluster.stream,
                  "exported_seq": self.exporter.at, "imported_stream_seq": self.importer.through,
                  "started": self.started, "updated": time.time()}
        write_atomic(self.status_path, status)

    # -- running ------------------------------------------------------------------------------

    async def _keep_status(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(STATUS_EVERY)

    async def _watch_bus(self) -> None:
        """Wake the exporter on every event of the master bus (the journal has it by then)."""
        context = zmq.asyncio.Context.instance()
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        # Only the newest frame matters (its seq and epoch): a burst is one wake-up, not one per event.
        sub.setsockopt(zmq.CONFLATE, 1)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(wire.endpoints(self.settings.sock_dir).pub)
        try:
            while True:
                frame = await sub.recv()
                if len(frame) >= wire.HEADER_SIZE:
                    seq, epoch = wire.HEADER.unpack_from(frame)
                    if seq:  # not a sync answer
                        self.exporter.bus_seq, self.exporter.bus_epoch = seq, epoch
                self.exporter.wake.set()
        finally:
            sub.close()

    async def _connected(self) -> Any:
        """A client to the cluster, retried until one connects (health says why not meanwhile)."""
        while True:
            try:
                return await jetstream.connect(self.cluster, name=f"eventbus-master-{self.master_id}",
                                               disconnected_cb=self._disconnected)
            except ClusterError as exc:
                self.health(str(exc))
            await asyncio.sleep(RETRY_CONNECT)

    async def _disconnected(self) -> None:
        if self.state == "up":
            self.health("the connection to the cluster was lost")

    async def _bucket(self, js: Any) -> Any:
        try:
            return await js.key_value(ids_bucket(self.cluster))
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
            pass
        try:
            return await js.create_key_value(KeyValueConfig(bucket=ids_bucket(self.cluster), history=1,
                                                            replicas=self.cluster.replicas,
                                                            storage=StorageType.FILE))
        except nats.js.errors.BadRequestError:
            return await js.key_value(ids_bucket(self.cluster))

    async def _find_bus(self) -> None:
        """The master bus's seq and epoch now, and the backlog of its earlier runs (a restart after an outage)."""
        while True:
            try:
                answer = await asyncio.to_thread(control.ping, self.settings.sock_dir, 5.0)
                break
            except EventBusError:
                await asyncio.sleep(0.5)
        if not self.exporter.bus_seq:
            self.exporter.bus_seq, self.exporter.bus_epoch = int(answer["seq"]), int(answer["epoch"])
        await asyncio.to_thread(self.exporter.count_earlier)
        # A master new to the fleet imports what the fleet stored since this run of it started.
        self.importer.joined_at = self.exporter.bus_epoch / 1e6

    async def run(self) -> None:
        """Serve until ``stopping`` is set (SIGTERM, or the master gone), whatever the cluster is doing."""
        work = asyncio.ensure_future(self._serve())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stopping.set()
            for task in (work, stop):
                task.cancel()
            await asyncio.wait([work, stop], timeout=STOP_GRACE)
            self.write_status()
            self.importer.close()
            self.pool.shutdown(wait=True)
            if self.handle is not None:
                self.handle.destroy()

    async def _serve(self) -> None:
        await self._find_bus()
        tasks = [asyncio.ensure_future(self._keep_status()), asyncio.ensure_future(self._watch_bus())]
        client = None
        try:
            while True:
                client = await self._connected()
                js = client.jetstream(timeout=jetstream.CONNECT_TIMEOUT)
                try:
                    info = await jetstream.ensure_stream(js, self.cluster)
                    window = info.config.duplicate_window or jetstream.DUPLICATE_WINDOW
                    # nats-py gives the window in seconds; half of it leaves time for the bucket's updates.
                    self.exporter.check_after = window / 2
                    kv = await self._bucket(js)
                except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                    self.health(jetstream.reason(exc, self.cluster))
                    await client.close()
                    await asyncio.sleep(RETRY_CONNECT)
                    continue
                self.health(None)
                work = [asyncio.ensure_future(self.exporter.run(js, kv, self.health)),
                        asyncio.ensure_future(self.importer.run(js))]
                done, _ = await asyncio.wait(work, return_when=asyncio.FIRST_COMPLETED)
                for task in work:
                    task.cancel()
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("cluster: %s; starting over", task.exception())
                await client.close()
                await asyncio.sleep(RETRY_CONNECT)
        finally:
            for task in tasks:
                task.cancel()
            if client is not None and not client.is_closed:
                try:
                    await asyncio.wait_for(client.close(), 2.0)
                except Exception:  # noqa: BLE001 - closing on the way out: nothing left to save
                    pass


def main(argv: list[str] | None = None) -> int:
    """``python -m eventbus.daemon.cluster MASTER_CONFIG``: run until SIGTERM or its master's end."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -m eventbus.daemon.cluster MASTER_CONFIG\n")
        return 2
    # The master that started it (``daemon/childproc.py`` says which): this process stops when that is no
    # longer its parent, also if it died before this line ran.
    parent = int(os.environ.get(MASTER_PID_ENV, "") or os.getppid())
    try:
        settings = config.load(config.MasterConfig, argv[0])
    except EventBusError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if settings.cluster is None:
        sys.stderr.write(f"error: {argv[0]} has no 'cluster' key\n")
        return 1
    logsetup.setup(settings.log_level, settings.log_file, name="cluster")
    service = ClusterService(settings)

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        def stop(why: str) -> None:
            if not service.stopping.is_set():
                log.info("cluster: stopping (%s)", why)
                service.stopping.set()
                # Whatever nats-py is in the middle of, the process is gone soon after.
                timer = threading.Timer(2 * STOP_GRACE, os._exit, (0,))
                timer.daemon = True
                timer.start()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signal.Signals(signum).name)

        def watch_parent() -> None:
            # A thread, not a task: it must work even if the loop is stuck somewhere.
            while os.getppid() == parent:
                time.sleep(1.0)
            log.error("cluster: the master (pid %d) is gone; stopping", parent)
            loop.call_soon_threadsafe(stop, "the master is gone")
            time.sleep(2 * STOP_GRACE)
            os._exit(0)

        threading.Thread(target=watch_parent, name="cluster-parent", daemon=True).start()
        await service.run()

    asyncio.run(serve())
    # Threads still in a call to the master or the cluster must not hold the exit: all is saved by now.
    logging.shutdown()
    os._exit(0)
