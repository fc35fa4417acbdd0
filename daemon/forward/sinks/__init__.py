"""The built-in forwarder sinks, one module per broker type (see eventbus.sink for the interface)."""
