"""Frame layouts between bus clients and their local daemon. No sockets here.

A bus daemon owns three IPC sockets in its ``sock_dir``. Events travel as
single frames (multipart costs more per event than the whole payload check):

- ``pull.ipc`` (daemon PULL, publishers PUSH): ``tag NUL data``, tag UTF-8
  without NUL, data a msgpack map.
- ``pub.ipc`` (daemon XPUB, subscribers SUB): ``header tag NUL data``, the
  header being ``seq`` and ``epoch``, two big-endian u64. ``seq`` counts
  every event of the bus, so a gap tells a subscriber how many it missed;
  ``epoch`` is the seq the daemon run started from (a new epoch means a
  restart). Seqs start from the daemon's start time in microseconds, so they
  keep growing across restarts and stay usable as resume ids.
- ``ctl.ipc`` (daemon ROUTER, clients DEALER or REQ): ``[verb, msgpack args]``
  to ``[status, msgpack result]``, status ``ok`` or ``error``.

A publisher that closes sends a barrier frame last (``BARRIER_PREFIX`` +
token) and asks the daemon's ``barrier`` verb until it has read it: as one
connection's frames arrive in order, every event it fired before has then
been numbered. So closing a handle hands over everything it accepted, and
two publishers used one after the other (``eventbus fire a; eventbus fire
b``) keep their order on the bus.

Subscribers subscribe to everything, then to a unique ``SYNC_PREFIX`` +
token. The daemon answers that subscription with a sync message (header
seq 0, then the token). As one socket's subscriptions are applied in order,
getting its own token back proves the subscriber is live, so nothing fired
afterwards is missed. Other subscribers ignore tokens that are not theirs.
"""
from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from eventbus.errors import ConfigError, MalformedFrameError

# sun_path is 108 bytes on Linux, one of which is the terminating NUL.
IPC_PATH_MAX_LEN = 107

HEADER = struct.Struct(">QQ")
HEADER_SIZE = HEADER.size
SEPARATOR = b"\x00"
SYNC_PREFIX = b"\x00sync:"
SYNC_HEADER = HEADER.pack(0, 0)
BARRIER_PREFIX = b"\x00barrier:"
BARRIER_TOKEN_MAX = 64

VERB_PING = b"ping"
VERB_STATS = b"stats"
VERB_REPLAY = b"replay"
VERB_BARRIER = b"barrier"            # every bus: whether a publisher's barrier frame was read
# Verbs the link components add (the client side is eventbus.bus.admin and eventbus.bus.relay).
VERB_LINK = b"link"                  # master and minion: the link's state
VERB_KEY = b"key"                    # master: list, accept, reject, delete minion keys
VERB_FIRE_MINIONS = b"fire_minions"  # master: fire an event on matching minions' buses
VERB_FIRE_STATUS = b"fire_status"    # master: which targets of a fire acknowledged it
VERB_RELAY = b"relay"                # minion: spool an event for the master
STATUS_OK = b"ok"
STATUS_ERROR = b"error"


@dataclass(frozen=True)
class Endpoints:
    """The IPC endpoints of one bus daemon."""

    sock_dir: Path
    pull: str
    pub: str
    ctl: str
    lock: Path

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(Path(e[len("ipc://"):]) for e in (self.pull, self.pub, self.ctl))


def endpoints(sock_dir: str | Path) -> Endpoints:
    """Endpoints under ``sock_dir``; ``ConfigError`` when a path is too long for a UNIX socket."""
    directory = Path(sock_dir)
    paths = {name: directory / f"{name}.ipc" for name in ("pull", "pub", "ctl")}
    longest = max(len(str(p).encode()) for p in paths.values())
    if longest > IPC_PATH_MAX_LEN:
        raise ConfigError(
            f"sock_dir {str(directory)!r} is too long: its socket paths would be {longest} bytes, "
            f"over the UNIX limit of {IPC_PATH_MAX_LEN}; choose a shorter sock_dir or root_dir",
            key="sock_dir", value=str(directory))
    return Endpoints(directory, *(f"ipc://{p}" for p in paths.values()), lock=directory / "daemon.lock")


def request(verb: bytes, args: Any = None) -> list[bytes]:
    """Frames of a control request."""
    return [verb, msgpack.packb(args, use_bin_type=True)]


def split_request(frames: list[bytes]) -> tuple[list[bytes], bytes, bytes]:
    """(routing frames, verb, msgpack args) of a request as a ROUTER got it; ``MalformedFrameError`` if cut wrong."""
    cut = 2 if frames[1:2] == [b""] else 1  # ROUTER prepends the peer's identity; a REQ peer an empty frame too
    if len(frames) != cut + 2:
        raise MalformedFrameError("malformed control request: expected [verb, msgpack args]", what="control request")
    return frames[:cut], frames[cut], frames[cut + 1]


def reply(result: Any, *, ok: bool = True) -> list[bytes]:
    """Frames of a control reply."""
    return [STATUS_OK if ok else STATUS_ERROR, msgpack.packb(result, use_bin_type=True)]


def parse_reply(frames: list[bytes]) -> tuple[bool, Any]:
    """(ok, result) of control reply frames."""
    if len(frames) != 2 or frames[0] not in (STATUS_OK, STATUS_ERROR):
        raise MalformedFrameError("malformed control reply: expected [ok|error, msgpack result]",
                                  what="control reply")
    return frames[0] == STATUS_OK, msgpack.unpackb(frames[1], raw=False, strict_map_key=False)


def barrier_frame(token: bytes) -> bytes:
    """A closing publisher's last frame (see the module doc)."""
    return BARRIER_PREFIX + token


def barrier_token(frame: bytes) -> bytes | None:
    """The token of a barrier frame; ``None`` if ``frame`` is not one."""
    if frame.startswith(BARRIER_PREFIX) and len(frame) <= len(BARRIER_PREFIX) + BARRIER_TOKEN_MAX:
        return frame[len(BARRIER_PREFIX):]
    return None


def publish_frame(raw_tag: bytes, *raw_data: bytes) -> bytes:
    """The frame a publisher sends: ``tag NUL data``, the data whole or in parts (joined once); without
    data, the head that the data follows."""
    return b"".join((raw_tag, SEPARATOR, *raw_data))


# ``split_publish_frame(frame)``: (tag bytes, NUL, data bytes) of a publisher's frame, as ``bytes.partition``
# gives them (the NUL empty when there is none): one C call, on the daemon's per-event path.
split_publish_frame = operator.methodcaller("partition", SEPARATOR)
_unpack_header = HEADER.unpack_from


def split_bus_frame(frame: bytes) -> tuple[int, int, bytes, bytes]:
    """(seq, epoch, tag bytes, data bytes) of a frame from the bus; ``MalformedFrameError`` if cut wrong."""
    try:
        seq, epoch = _unpack_header(frame)
        cut = frame.index(SEPARATOR, HEADER_SIZE)
    except (struct.error, ValueError):
        raise MalformedFrameError(f"a {len(frame)}-byte bus frame has no header or no NUL after its tag",
                                  what="bus frame") from None
    return seq, epoch, frame[HEADER_SIZE:cut], frame[cut + 1:]


def sync_token(frame: bytes) -> bytes | None:
    """The token of a daemon's sync answer (header seq 0, see the module doc); ``None`` if ``frame`` is not one."""
    return frame[HEADER_SIZE:] if frame[:HEADER_SIZE] == SYNC_HEADER else None
