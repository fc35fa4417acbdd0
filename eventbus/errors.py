"""The one error hierarchy of eventbus.

Every error eventbus raises on purpose derives from ``EventBusError``, so a
caller (the CLI, a daemon's main loop) can catch the base once and print
``error: <message>``. Where the public contract promises ``ValueError`` the
class also derives from it, so Salt-style ``except ValueError`` keeps working.

::

    EventBusError
    ├── ConfigError                 bad config file, key or value (file, key, value)
    ├── InvalidEventError(ValueError)   data not a dict, empty tag, unpackable value
    │   └── EventTooLargeError      packed event over max_event_size (size, limit)
    ├── BusUnavailableError         no daemon answered on sock_dir (sock_dir)
    │   └── BusDisconnectedError    a listening handle lost its daemon
    ├── DaemonAlreadyRunningError   another live daemon owns sock_dir (pid)
    ├── ProtocolError               a peer sent frames that are not our protocol
    ├── UnknownKeyError             a key operation named a minion id not held in that state
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


class ProtocolError(EventBusError):
    """A peer sent frames that are not eventbus protocol."""


class UnknownKeyError(EventBusError):
    """A key operation (accept, reject, delete) named a minion id the key store does not hold."""


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
