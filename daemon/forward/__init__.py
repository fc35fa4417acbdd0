"""``eventbus forward``: the master bus shipped into brokers, at least once, in order."""
