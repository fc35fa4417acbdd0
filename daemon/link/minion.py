"""The minion's side of the link: its masters' sockets and the timers around ``MinionMasters``.

Relayed events come in on ``relay.ipc`` (``fire_master``) or the ``relay``
control verb (``eventbus send``), go to the spool, and leave from it in
batches over a CURVE DEALER to each master's ``ret_port`` as soon as that
master has welcomed this minion; the acks free them from the spool (when
every master that must have them has them: see ``cursors``). A master's
``last`` seq in its welcome says where to resume after any reconnect, so a cut
link or a restart on either side loses and repeats nothing. Heartbeats: a
ping every interval, and a master silent for two intervals is taken for dead
and the connection is rebuilt; a failover minion checks its live master every
sixteenth of ``master_alive_interval`` and moves on after 1.5 intervals of silence.

What to do when is ``MinionMasters``' and each ``MinionSession``'s call; this
class owns the relay intake socket and the timers, keeps one
``MasterConnection`` (sockets) per master and carries out the actions.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import zmq

from eventbus.daemon.link import minion_session as ms
from eventbus.daemon.link.masterconn import MasterConnection
from eventbus.daemon.link.minion_masters import Addressed, Close, MinionMasters
from eventbus.daemon.bus import Bus
from eventbus.refusallog import Complaints
from eventbus.daemon.loop import Loop
from eventbus.daemon.link.spool import Spool
from eventbus import keys, masters
from eventbus.bus import relay, wire
from eventbus.config import MinionConfig
from eventbus.errors import ConfigError, InvalidEventError

log = logging.getLogger(__name__)

INTAKE_BATCH = 1024


class MinionLink:
    """This minion's links to its masters."""

    def __init__(self, settings: MinionConfig, context: zmq.Context, loop: Loop, bus: Bus) -> None:
        self.settings = settings
        self.context = context
        self.loop = loop
        self.bus = bus
        self.complaints = Complaints(log)
        addresses = settings.masters
        for address in addresses:
            if address.pubkey is not None and not keys.valid_key(address.pubkey):
                name = "master_pubkey" if settings.master_pubkey else "master"
                raise ConfigError(f"{settings.source}: key {name!r} has value {address.pubkey!r}; expected the "
                                  f"CURVE public key of the master at {address.name} (40 Z85 characters)",
                                  key=name, value=address.pubkey)
        self.public_key, self.secret_key = keys.key_pair(settings.pki_dir, "minion")
        self.spool = Spool(settings.cachedir / "spool", settings.spool_max_events)
        self.spool.start_syncing()
        if len(self.spool):
            log.info("%d relayed events wait in the spool for the master", len(self.spool))
        several = len(addresses) > 1
        self.pin_paths = [address.pin_path(settings.pki_dir, several) for address in addresses]
        master_keys = [address.pubkey or masters.pinned_key(path) for address, path in zip(addresses, self.pin_paths)]
        self.masters = MinionMasters(settings, self.spool, self.public_key, master_keys,
                                     [str(path) for path in self.pin_paths], time.monotonic())
        self.several = several
        max_message = settings.max_event_size + 4096
        self.connections = [
            MasterConnection(session, context, loop, self.public_key, self.secret_key, max_message,
                             lambda actions, index=index: self._run([(index, a) for a in actions]))
            for index, session in enumerate(self.masters.sessions)]

        self.relay_endpoint = relay.relay_endpoint(settings.sock_dir)
        old_umask = os.umask(0o077)
        try:
            self.relay_socket = context.socket(zmq.PULL)
            self.relay_socket.setsockopt(zmq.RCVHWM, 10_000)
            self.relay_socket.setsockopt(zmq.MAXMSGSIZE, settings.max_event_size + 4096)
            self.relay_socket.setsockopt(zmq.LINGER, 0)
            self.relay_socket.bind(self.relay_endpoint)
        finally:
            os.umask(old_umask)
        loop.add_reader(self.relay_socket, self._on_relay)
        bus.register_verb(wire.VERB_RELAY, self._relay_verb)
        bus.register_verb(wire.VERB_LINK, lambda _args: self.masters.status())

        self._run(self.masters.start(time.monotonic()))
        for index in range(len(self.connections)):
            loop.call_later(self.masters.sessions[index].heartbeat, lambda index=index: self._tick(index))
        if self.masters.failover is not None:
            # Sixteen looks per interval: the move comes within 1.5 intervals of silence and a sixteenth.
            loop.call_every(settings.alive_interval / 16, self._check)
        loop.call_every(1.0, self.spool.sync)

    @property
    def state(self) -> ms.LinkState:
        return ms.LinkState(self.masters.state())

    def _run(self, actions: list[Addressed]) -> None:
        """Carry out the actions, in order, each on its master's connection."""
        for index, action in actions:
            kind = type(action)
            if kind is ms.Refuse:
                where = f"@{self.connections[index].address.name}" if self.several and index is not None else ""
                self.complaints.refuse(action.kind + where, action.message)
                continue
            if kind is ms.Note:
                log.log(action.level, "%s", action.message)
                continue
            connection = self.connections[index]  # type: ignore[index]
            if kind is ms.Pump:
                connection.pump()
            elif kind is ms.Send:
                connection.send(action.frames)
            elif kind is ms.ResumeAfter:
                session = connection.session
                self.loop.call_later(action.delay,
                                     lambda index=index, session=session: self._run(
                                         [(index, a) for a in session.resume()]))
            elif kind is ms.PublishFrame:
                self.bus.publish_frame(action.frame)
            elif kind is ms.Connect:
                connection.connect()
            elif kind is ms.AskKey:
                connection.ask_key()
            elif kind is ms.PinKey:
                masters.pin_key(self.pin_paths[index], action.key)  # type: ignore[index]
            elif kind is Close:
                connection.close()

    def _tick(self, index: int) -> None:
        # Rescheduled each time: the master's welcome may lower the interval.
        session = self.masters.sessions[index]
        self.loop.call_later(session.heartbeat, lambda: self._tick(index))
        if index in self.masters.linked():
            self._run([(index, a) for a in session.tick(time.monotonic())])

    def _check(self) -> None:
        self._run(self.masters.check(time.monotonic()))

    # -- relay intake ---------------------------------------------------------------

    def _on_relay(self) -> None:
        recv = self.relay_socket.recv
        frames = []
        for _ in range(INTAKE_BATCH):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            token = wire.barrier_token(frame)
            if token is not None:
                # A closing fire_master handle's last frame: what it sent before is spooled first.
                if frames:
                    self._run(self.masters.intake(frames))
                    frames = []
                self.bus.note_barrier(token)
                continue
            frames.append(frame)
        if frames:
            self._run(self.masters.intake(frames))

    def _relay_verb(self, args: Any) -> dict:
        try:
            result, actions = self.masters.relay(args)
        except InvalidEventError as exc:
            if exc.reason == "reserved":
                self.complaints.refuse("relay", f"refused to relay an event: {exc}")
            raise
        self._run(actions)
        return result

    def close(self) -> None:
        self.loop.remove_reader(self.relay_socket)
        self.relay_socket.close(0)
        try:
            os.unlink(self.relay_endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass
        for connection in self.connections:
            connection.close()
        self.spool.close()
