"""The master's side of the link: minions' CURVE sessions, relay, presence, fires and key verbs.

Sockets (all on the daemon's loop, no threads):

- ``ret_port``: a CURVE ROUTER carrying every link message both ways. Each
  message's ``User-Id`` (the minion's proven public key, see ``daemon.zap``)
  picks its session; ids come from the key store, never from the payload.
- ``publish_port``: a plain ROUTER that answers anything with the master's
  public key, so a minion can pin it on first contact. A public key is not
  a secret; nothing else crosses this port.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from daemon import keys, linkproto
from daemon.bus import Bus
from daemon.complaints import Complaints
from daemon.loop import Loop
from daemon.presence import Presence
from daemon.zap import DOMAIN, ZapHandler
from eventbus import payload, wire
from eventbus.config import MasterConfig
from eventbus.errors import EventBusError, InvalidEventError, ProtocolError, UnknownKeyError

log = logging.getLogger(__name__)

FRAME_SLACK = 4096
FIRE_JOB_TTL = 120.0
KEY_OFFER = b"key"

VERB_KEY = b"key"
VERB_FIRE = b"fire_minions"
VERB_FIRE_STATUS = b"fire_status"
VERB_LINK = b"link"


@dataclass
class Session:
    """One minion key's link state on the master."""

    key: str
    minion_id: str
    route: bytes
    accepted: bool = False
    last_seq: int = 0
    framer: linkproto.RelayFramer | None = None


@dataclass
class FireJob:
    """A fire sent to some minions, and which of them said it is on their bus."""

    targets: list[str]
    acked: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


class RelaySeqs:
    """The newest relay seq accepted per minion, on disk so a master restart re-accepts nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load(self, minion_id: str) -> int:
        try:
            return int((self.directory / minion_id).read_bytes() or b"0")
        except (FileNotFoundError, ValueError):
            return 0

    def store(self, minion_id: str, seq: int) -> None:
        fd = os.open(self.directory / minion_id, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"%020d" % seq, 0)
        finally:
            os.close(fd)


class MasterLink:
    """Every minion's link to this master."""

    def __init__(self, settings: MasterConfig, context: zmq.Context, loop: Loop, bus: Bus) -> None:
        self.settings = settings
        self.loop = loop
        self.bus = bus
        self.heartbeat = settings.heartbeat_interval
        self.max_event_size = settings.max_event_size
        self.complaints = Complaints(log)
        public, secret = keys.key_pair(settings.pki_dir, "master")
        self.public_key = public
        self.keys = keys.KeyStore(settings.pki_dir)
        self.relay_seqs = RelaySeqs(settings.cachedir / "relay")
        self.sessions: dict[str, Session] = {}
        self.presence = Presence(1.5 * self.heartbeat)
        self.fire_jobs: dict[int, FireJob] = {}
        self._next_job = 1
        self.zap = ZapHandler(context, loop)

        self.link_socket = context.socket(zmq.ROUTER)
        self.link_socket.curve_server = True
        self.link_socket.curve_publickey = public
        self.link_socket.curve_secretkey = secret
        self.link_socket.zap_domain = DOMAIN
        self.link_socket.setsockopt(zmq.MAXMSGSIZE, settings.max_event_size + FRAME_SLACK)
        self.link_socket.setsockopt(zmq.LINGER, 0)
        self.link_socket.setsockopt(zmq.SNDHWM, 10_000)
        self.link_socket.setsockopt(zmq.RCVHWM, 10_000)
        self.link_socket.setsockopt(zmq.HEARTBEAT_IVL, int(self.heartbeat * 1000))
        self.link_socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(self.heartbeat * 3000))
        self.offer_socket = context.socket(zmq.ROUTER)
        self.offer_socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        self.offer_socket.setsockopt(zmq.LINGER, 0)
        try:
            self._listen(self.link_socket, "ret_port", settings.ret_port)
            self._listen(self.offer_socket, "publish_port", settings.publish_port)
        except EventBusError:
            self.link_socket.close(0)
            self.offer_socket.close(0)
            self.zap.close()
            raise

        loop.add_reader(self.link_socket, self._on_link)
        loop.add_reader(self.offer_socket, self._on_offer)
        loop.call_every(self.heartbeat / 4, self._check_presence)
        if settings.presence_events:
            loop.call_every(settings.loop_interval, self._presence_events)
        bus.register_verb(VERB_KEY, self._key_verb)
        bus.register_verb(VERB_FIRE, self._fire_verb)
        bus.register_verb(VERB_FIRE_STATUS, self._fire_status_verb)
        bus.register_verb(VERB_LINK, self._link_verb)
        log.info("link listening on %s:%d (CURVE), master key offered on port %d",
                 settings.interface, settings.ret_port, settings.publish_port)

    def _listen(self, sock: zmq.Socket, key: str, port: int) -> None:
        address = f"tcp://{self.settings.interface}:{port}"
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise EventBusError(f"cannot listen for minions on {address} ({key}): {exc}") from None

    # -- messages from minions ------------------------------------------------------

    def _on_offer(self) -> None:
        for _ in range(64):
            try:
                frames = self.offer_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.offer_socket.send_multipart([frames[0], KEY_OFFER, self.public_key])

    def _on_link(self) -> None:
        recv = self.link_socket.recv_multipart
        for _ in range(64):
            try:
                frames = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            route = frames[0].bytes
            try:
                key = frames[1].get("User-Id")
            except zmq.ZMQError:
                key = ""
            try:
                message = linkproto.parse([f.bytes for f in frames[1:]])
            except ProtocolError as exc:
                self.complaints.refuse("protocol", f"refused a link message from key {key[:12]}...: {exc}")
                continue
            self._dispatch(route, key, message)

    def _dispatch(self, route: bytes, key: str, message: linkproto.Message) -> None:
        kind = message.kind
        if kind == linkproto.HELLO:
            self._hello(route, key, message.value["id"])
            return
        session = self.sessions.get(key)
        if session is None:
            self.link_socket.send_multipart([route, *linkproto.WHO_MESSAGE])
            return
        session.route = route
        if session.accepted:
            self.presence.heard(session.minion_id, time.monotonic())
        if kind == linkproto.EVENTS:
            self._events(session, message)
        elif kind == linkproto.PING:
            self.link_socket.send_multipart([route, *linkproto.PONG_MESSAGE])
        elif kind == linkproto.FIRED:
            job = self.fire_jobs.get(message.value)
            if job is not None and session.accepted:
                job.acked.add(session.minion_id)
        else:
            self.complaints.refuse("protocol", f"refused a {kind.decode()!r} message from minion "
                                               f"{session.minion_id!r}: not a minion's message")

    def _hello(self, route: bytes, key: str, minion_id: str) -> None:
        if not keys.valid_key(key):
            self.complaints.refuse("auth", "refused a hello from a connection without a CURVE key")
            return
        decision = self.keys.decide(minion_id, key, self.settings.auto_accept)
        self.bus.publish("salt/auth", {"result": decision.accepted, "act": decision.act,
                                       "id": minion_id, "pub": key})
        if decision.act == "denied":
            log.warning("denied minion %r: its id is bound to another key", minion_id)
        session = Session(key, minion_id, route)
        old = self.sessions.get(key)
        if old is not None and old.minion_id != minion_id and old.accepted:
            self.presence.forget(old.minion_id)
        self.sessions[key] = session
        if decision.accepted:
            self._admit(session)
        else:
            if decision.act == "pend":
                log.info("minion %r is pending; accept its key with 'eventbus key --accept %s'",
                         minion_id, minion_id)
            self.link_socket.send_multipart([route, *linkproto.welcome(decision.act, 0, self.heartbeat)])

    def _admit(self, session: Session) -> None:
        """Let an accepted minion relay: tell it where to resume, announce its start."""
        session.accepted = True
        session.last_seq = self.relay_seqs.load(session.minion_id)
        session.framer = linkproto.RelayFramer(session.minion_id)
        self.presence.heard(session.minion_id, time.monotonic())
        self.link_socket.send_multipart(
            [session.route, *linkproto.welcome("accept", session.last_seq, self.heartbeat)])
        self.bus.publish(f"salt/minion/{session.minion_id}/start", {
            "id": session.minion_id, "cmd": "_minion_event",
            "data": f"Minion {session.minion_id} started at {time.ctime()}"})

    def _events(self, session: Session, message: linkproto.Message) -> None:
        if not session.accepted:
            self.complaints.refuse("unaccepted", f"refused events from minion {session.minion_id!r}: "
                                                 "its key is not accepted")
            return
        first, floor = message.value
        frames = message.frames
        last = session.last_seq
        if first > max(last, floor) + 1:
            # A gap the minion did not make: it must resend from what we have.
            self.link_socket.send_multipart([session.route, *linkproto.resend(last)])
            return
        make = session.framer.frame  # type: ignore[union-attr]
        publish = self.bus.publish_frame
        limit = self.max_event_size
        seq = first - 1
        for frame in frames:
            seq += 1
            if seq <= last:
                continue
            try:
                _tag, out = make(frame, limit)
            except InvalidEventError as exc:
                self.complaints.refuse("relay", f"refused an event from minion {session.minion_id!r}: {exc}")
                continue
            publish(out)
        if seq > last:
            session.last_seq = seq
            self.relay_seqs.store(session.minion_id, seq)
        self.link_socket.send_multipart([session.route, *linkproto.ack(session.last_seq)])

    # -- presence -------------------------------------------------------------------

    def _check_presence(self) -> None:
        for minion_id in self.presence.expire(time.monotonic()):
            log.info("minion %r stopped answering: not present", minion_id)
        now = time.monotonic()
        for job_id in [j for j, job in self.fire_jobs.items() if now - job.started > FIRE_JOB_TTL]:
            del self.fire_jobs[job_id]

    def _presence_events(self) -> None:
        present, new, lost = self.presence.report()
        self.bus.publish("salt/presence/present", {"present": present})
        if new or lost:
            self.bus.publish("salt/presence/change", {"new": new, "lost": lost})

    # -- control verbs --------------------------------------------------------------

    def _key_verb(self, args: Any) -> Any:
        if not isinstance(args, dict) or args.get("op") not in ("list", "accept", "accept_all", "reject", "delete"):
            raise ValueError("expected {'op': list|accept|accept_all|reject|delete, 'id': <minion id>}")
        op = args["op"]
        if op == "list":
            return self.keys.listing()
        ids = self.keys.listing()[keys.PENDING] if op == "accept_all" else [args.get("id")]
        act = "accept" if op == "accept_all" else op
        changed = []
        for minion_id in ids:
            try:
                key = getattr(self.keys, act)(minion_id)
            except UnknownKeyError as exc:
                raise ValueError(str(exc)) from None
            changed.append(minion_id)
            self.bus.publish("salt/key", {"result": True, "id": minion_id, "act": act})
            session = self.sessions.get(key)
            if session is None or session.minion_id != minion_id:
                continue
            if act == "accept":
                self.bus.publish("salt/auth", {"result": True, "act": "accept", "id": minion_id, "pub": key})
                self._admit(session)
            else:
                session.accepted = False
                self.presence.forget(minion_id)
                if act == "delete":
                    del self.sessions[key]
                    self.link_socket.send_multipart([session.route, *linkproto.WHO_MESSAGE])
                else:
                    self.link_socket.send_multipart([session.route, *linkproto.welcome("reject", 0, self.heartbeat)])
        return changed

    def _fire_verb(self, args: Any) -> dict:
        if not isinstance(args, dict) or not isinstance(args.get("target"), str):
            raise ValueError("expected {'tag': str, 'data': dict, 'target': glob}")
        raw_tag, raw_data = payload.pack_event(args.get("tag"), args.get("data"), self.max_event_size)
        frame = wire.publish_frame(raw_tag, raw_data)
        chosen = {s.minion_id: s for s in self.sessions.values()
                  if s.accepted and s.minion_id in self.presence and fnmatch.fnmatchcase(s.minion_id, args["target"])}
        job_id = self._next_job
        self._next_job += 1
        self.fire_jobs[job_id] = FireJob(sorted(chosen))
        message = linkproto.fire(job_id, frame)
        for session in chosen.values():
            self.link_socket.send_multipart([session.route, *message])
        return {"job": job_id, "targets": sorted(chosen)}

    def _fire_status_verb(self, args: Any) -> dict:
        job = self.fire_jobs.get(args.get("job") if isinstance(args, dict) else None)
        if job is None:
            raise ValueError("no such fire job (it may have expired)")
        return {"targets": job.targets, "acked": sorted(job.acked)}

    def _link_verb(self, _args: Any) -> dict:
        return {"sessions": len(self.sessions), "accepted": sum(s.accepted for s in self.sessions.values()),
                "present": self.presence.present(), "refused": self.complaints.count}

    def close(self) -> None:
        for sock in (self.link_socket, self.offer_socket):
            self.loop.remove_reader(sock)
            sock.close(0)
        self.zap.close()
