"""The master's journal as readers see it: the on-disk format and the reader (the writer is the daemon's)."""
