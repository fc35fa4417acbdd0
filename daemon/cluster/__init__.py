"""The master's side of the fleet-wide bus (SPEC 12, docs/fleet.md): export, import, de-duplication."""
