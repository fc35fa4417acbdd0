"""The interface every forwarder sink implements (built-in or a custom ``package.module.Class``)."""
from __future__ import annotations
from dataclasses import dataclass
from eventbus.errors import EventBusError

class SinkError(EventBusError):
    """A sink could not deliver a batch; the forwarder retries the whole batch later."""

@dataclass(frozen=True)
class Outgoing:
    """One bus event on its way to a broker."""
    seq: int
    tag: str
    data: dict              # as the master bus carries it
    minion_id: str | None   # data["id"] for relayed events, else None
    time: str               # RFC 3339 UTC, from data["_stamp"]
    body: bytes             # the JSON record in the broker's `format` (salt or CloudEvents structured)

class Sink:
    """Base class of forwarder sinks; ``publish`` returns only when the broker durably accepted the batch."""
    @classmethod
    def from_endpoint_config(cls, cfg: dict) -> "Sink":
        return cls(cfg)  # type: ignore[call-arg]
    def publish(self, batch: list[Outgoing]) -> None:
        raise NotImplementedError
    def is_ready(self) -> bool:
        return True
    def close(self) -> None:
        pass
