"""The bus client's core: frames, payloads, matching, the one reading loop, control and relay requests."""
