"""The fleet-wide bus: several masters' buses joined on one NATS JetStream stream (SPEC 12, docs/fleet.md).

``settings`` reads the master's ``cluster`` key, ``records`` is the stream's message layout (subject,
body, headers, fleet identity), ``jetstream`` connects and makes the stream. What a master does with them
(export, import, de-duplication) lives in ``eventbus.daemon.cluster``.
"""
