"""The one error hierarchy of eventbus.

Every error eventbus raises on purpose derives from ``EventBusError``, so a
caller (the CLI, a daemon's main loop) can catch the base once and print
``error: <message>``. Where the public contract promises ``ValueError`` the
class also derives from it, so Salt-style ``except ValueError`` keeps working.

::

    EventBusError
    ├── ConfigError                 bad config file, key or value (file, key, value)
    ├── InvalidArgumentError(ValueError)  a call or command given a value it cannot take (argument, value)
    │   ├── InvalidMatchError       unknown match_type or bad regular expression (pattern, match_type)
    │   └── InvalidMinionIdError    a string that cannot name a minion (minion_id, reason)
    ├── InvalidEventError(ValueError)   data not a dict, empty tag, unpackable value
    │   └── EventTooLargeError      packed event over max_event_size (size, limit)
    ├── BusUnavailableError         no daemon answered on sock_dir (sock_dir)
    │   └── BusDisconnectedError    a listening handle lost its daemon
    ├── DaemonAlreadyRunningError   another live daemon owns sock_dir (pid)
    ├── DaemonRefusedError          a daemon answered a control request with a refusal (verb, reason)
    ├── ProtocolError               a peer sent frames that are not our protocol
    │   └── MalformedFrameError(ValueError)  a bus frame or control reply cut wrong (what)
    ├── UnknownKeyError             a key operation named a minion id not held in that state
    ├── JournalError                the event journal cannot be used (path)
    ├── CursorError                 a reader's saved position cannot be read or saved (path)
    ├── OutboxError                 a forwarder's on-disk outbox cannot be used (path)
    ├── SinkError                   a forwarder's broker did not accept a batch (broker)
    ├── ClusterError                the fleet's NATS JetStream cluster cannot be reached or refused (reason)
    ├── HttpConnectionError(ConnectionError)  an outbound HTTP POST got no answer (url)
    └── ApiError                    a REST request refused (status, reason)
        ├── AuthenticationError     missing, bad or expired credentials (401)
        └── TooManyRequestsError    a client over a rate limit, e.g. login_rate (429, retry_after)
"""
from __future__ import annotations

from typing import Any


class EventBusError(Exception):
    """Base of every error eventbus raises on purpose."""


class ConfigError(EventBusError):
    """A config file, key or value is wrong; the message names all three."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 value: Any = None) -> None:
        self.file = file
        self.key = key
        self.value = value
        super().__init__(message)


class InvalidArgumentError(EventBusError, ValueError):
    """A public call or a command got a value it cannot take; ``argument`` names which."""

    def __init__(self, message: str, *, argument: str, value: Any = None) -> None:
        self.argument = argument
        self.value = value
        super().__init__(message)


class InvalidMatchError(InvalidArgumentError):
    """A tag pattern that cannot be matched: unknown ``match_type`` or a bad regular expression."""

    def __init__(self, message: str, *, pattern: str, match_type: str, argument: str = "tag") -> None:
        self.pattern = pattern
        self.match_type = match_type
        super().__init__(message, argument=argument, value=match_type if argument == "match_type" else pattern)


class InvalidMinionIdError(InvalidArgumentError):
    """A string that cannot name a minion (and its key file); ``reason`` says what is wrong."""

    def __init__(self, minion_id: Any, reason: str) -> None:
        self.minion_id = minion_id
        self.reason = reason
        super().__init__(f"{str(minion_id)[:80]!r} is not a valid minion id: {reason}",
                         argument="id", value=minion_id)


class InvalidEventError(EventBusError, ValueError):
    """An event that cannot go on the bus: data not a dict, bad tag, unpackable value."""

    def __init__(self, message: str, *, tag: str | None = None, reason: str = "invalid") -> None:
        self.tag = tag
        self.reason = reason  # a stable code for the kind of problem (logs group by it)
        super().__init__(message)


class EventTooLargeError(InvalidEventError):
    """A packed event is larger than ``max_event_size``."""

    def __init__(self, size: int, limit: int, *, tag: str | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"event {tag!r} is {size} bytes packed, over max_event_size of {limit} bytes",
            tag=tag, reason="too-large")


class BusUnavailableError(EventBusError):
    """No bus daemon answered on a sock_dir."""

    def __init__(self, message: str, *, sock_dir: str | None = None) -> None:
        self.sock_dir = sock_dir
        super().__init__(message)


class BusDisconnectedError(BusUnavailableError):
    """A listening handle lost its daemon and was not asked to reconnect."""


class DaemonAlreadyRunningError(EventBusError):
    """Another live daemon owns the sock_dir this one was asked to use."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class DaemonRefusedError(EventBusError):
    """A daemon answered a control request (``key``, ``relay``, ``fire_minions``...) with a refusal.

    ``reason`` is the daemon's own words (e.g. ``no key for minion 'web9' in
    minions_pre or minions_rejected``), fit to show a user as it is.
    """

    def __init__(self, verb: str, reason: str, *, sock_dir: str | None = None) -> None:
        self.verb = verb
        self.reason = reason
        self.sock_dir = sock_dir
        super().__init__(f"the daemon on sock_dir {sock_dir} refused {verb}: {reason}")


class ProtocolError(EventBusError):
    """A peer sent frames that are not eventbus protocol."""


class MalformedFrameError(ProtocolError, ValueError):
    """A frame from a bus daemon (event or control reply) that is cut wrong; ``what`` names the frame."""

    def __init__(self, message: str, *, what: str) -> None:
        self.what = what
        super().__init__(message)


class UnknownKeyError(EventBusError):
    """A key operation (accept, reject, delete) named a minion id the key store does not hold."""


class _PathError(EventBusError):
    """A file or directory at ``path`` cannot be used (the base of the three below, not raised itself)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class JournalError(_PathError):
    """The event journal at ``path`` cannot be opened or read (missing directory, not a journal)."""


class CursorError(_PathError):
    """A reader's durable position at ``path`` cannot be read or saved."""


class OutboxError(_PathError):
    """A forwarder's on-disk outbox at ``path`` cannot be opened or written."""


class SinkError(EventBusError):
    """A broker did not accept a batch (unreachable, refused, not ready); the batch is retried."""

    def __init__(self, message: str, *, broker: str | None = None) -> None:
        self.broker = broker
        super().__init__(message)


class HttpConnectionError(EventBusError, ConnectionError):
    """An outbound HTTP POST (``eventbus.httppost``) got no answer: no connection, a lost one, or a timeout."""

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)


class ClusterError(EventBusError):
    """The fleet's NATS JetStream cluster did not answer or refused; the message is the one-line reason."""


class ApiError(EventBusError):
    """A REST API request refused; ``status`` is the HTTP status it is answered with."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


class AuthenticationError(ApiError):
    """Missing, malformed, forged or expired credentials (answered 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, reason)


class TooManyRequestsError(ApiError):
    """A client over a rate limit (answered 429); ``retry_after`` is the seconds until it may try again."""

    def __init__(self, reason: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(429, reason)
