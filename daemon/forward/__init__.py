"""``eventbus forward``: the master bus into brokers, through a durable outbox per broker (docs/forward.md)."""
