"""``X-Hub-Signature`` values: one signer and one checker for webhooks, CloudEvents and channels."""
from __future__ import annotations

import dataclasses
import time

from eventbus.daemon.forward.sinks.webhook import WebhookSink
from eventbus.cloudevents import channels
from eventbus import cloudevents, signing
from eventbus.sink import Outgoing

# RFC 4231, test case 2: HMAC-SHA256 of "what do ya want for nothing?" with the key "Jefe".
BODY = b"what do ya want for nothing?"
SIGNED = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_every_signer_gives_the_hex_hmac_sha256_of_the_body():
    assert signing.sign(BODY, "Jefe") == SIGNED
    assert cloudevents.sign(BODY, "Jefe") == SIGNED
    sink = WebhookSink.from_endpoint_config({"name": "w", "type": "webhook", "url": "http://127.0.0.1:9/",
                                             "secret": "Jefe"})
    headers, body = sink.request_for(Outgoing(1, "t", {}, None, "2026-01-01T00:00:00Z", BODY))
    assert body == BODY and headers["X-Hub-Signature"] == SIGNED


def test_verify_takes_any_of_the_secrets_and_nothing_else():
    assert signing.verify(SIGNED, BODY, "old", "Jefe")
    assert signing.verify(SIGNED, BODY, None, "Jefe")
    assert not signing.verify(SIGNED, BODY + b"!", "Jefe")
    assert not signing.verify(SIGNED, BODY, "old", None)
    assert not signing.verify(SIGNED, BODY)
    for header in (None, "", "sha256=", SIGNED.upper(), "sha256=\u00e9" + SIGNED[8:], SIGNED[7:]):
        assert not signing.verify(header, BODY, "Jefe"), header


def test_a_channel_takes_its_old_secret_only_within_the_grace():
    channel = channels.Channel("c", None, (), "new", previous="Jefe", previous_until=time.time() + 60)
    assert channel.verify(BODY, SIGNED)
    assert channel.verify(BODY, signing.sign(BODY, "new"))
    assert not dataclasses.replace(channel, previous_until=time.time() - 1).verify(BODY, SIGNED)
    assert not channel.verify(BODY, None)
