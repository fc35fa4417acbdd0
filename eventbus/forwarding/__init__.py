"""The forwarders' library side: the ``forward`` file, broker types, record formats and the on-disk outbox."""
