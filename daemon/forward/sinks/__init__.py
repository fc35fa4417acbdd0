"""Built-in sinks, one module per broker type; ``eventbus.daemon.forward.registry`` maps type names to them."""
