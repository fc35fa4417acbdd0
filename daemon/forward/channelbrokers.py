"""CloudEvents channels that publish, as webhook brokers of this forwarder.

A channel with an outbound URL and ``--publish`` globs becomes the broker ``channel.NAME.KEY`` (KEY: random,
made by ``channel add``), type ``webhook``, ``format: cloudevents``, signed with the channel's current
secret. The channels are those of the API config beside the ``forward`` file; they are re-read every second
and the threads restarted (cursors kept) when they change. See docs/cloudevents.md, Publishing.
"""
from __future__ import annotations

import logging
from pathlib import Path

from eventbus.cloudevents import channels
from eventbus import config
from eventbus.errors import EventBusError
from eventbus.forwarding.config import BrokerConfig, ForwardConfig

log = logging.getLogger(__name__)

PREFIX = "channel."


def api_root(settings: ForwardConfig) -> Path | None:
    """The ``root_dir`` of the API config beside the forward file, or ``None`` when there is none."""
    if settings.source is None:
        return None
    path = Path(settings.source).parent / "api"
    if not path.is_file():
        return None
    try:
        return config.load(config.ApiConfig, path).root_dir
    except EventBusError as exc:
        log.warning("channels are not published: the api config %s cannot be read: %s", path, exc)
        return None


def brokers(settings: ForwardConfig, root: Path | None) -> tuple[BrokerConfig, ...] | None:
    """One webhook broker per publishing channel (none without an API config); ``None`` when the
    channels cannot be read now (the caller keeps what it has)."""
    if root is None:
        return ()
    found = []
    try:
        current = channels.load_all(root)
    except EventBusError as exc:
        log.warning("channels not (re)read: %s", exc)
        return None
    for name, channel in sorted(current.items()):
        if not channel.outbound_url or not channel.publish:
            continue
        # A channel removed and added again is a new broker (new outbox, starting at the bus head).
        broker = f"{PREFIX}{name}.{channel.key}" if channel.key else PREFIX + name
        options = {"name": broker, "type": "webhook", "url": channel.outbound_url,
                   "secret": channel.secret, "mode": "structured", "format": "cloudevents",
                   "tags": list(channel.publish), "root_dir": str(settings.root_dir)}
        found.append(BrokerConfig(broker, "webhook", channel.publish, "cloudevents",
                                  options=options, secrets=(channel.secret,)))
    return tuple(found)
