"""``GET /events``: bus feed -> hub -> stream -> pump, each step handing the next a finished record."""
