"""Built-in sinks, one module per broker type; ``daemon.forward.registry`` maps type names to them."""
