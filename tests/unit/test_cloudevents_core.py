"""The sans-IO parts of CloudEvents ingest: schema drafts, channels and secrets, the check order, duplicates."""
from __future__ import annotations

import json
import threading
import time

import pytest
from jsonschema import validators

from eventbus.cloudevents import channels, eventtypes
from eventbus import signing
from eventbus.errors import InvalidArgumentError
from eventbus.netapi.cloudevents.ingest import Ingest, Refusal, Seen

SCHEMA = {"$schema": "http://json-schema.org/draft/2019-09/schema#", "type": "object",
          "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize("declared,cls", [
    ("http://json-schema.org/draft-04/schema#", validators.Draft4Validator),
    ("http://json-schema.org/draft-06/schema#", validators.Draft6Validator),
    ("http://json-schema.org/draft-07/schema#", validators.Draft7Validator),
    ("http://json-schema.org/draft/2019-09/schema#", validators.Draft201909Validator),
    ("https://json-schema.org/draft/2019-09/schema", validators.Draft201909Validator),
])
def test_each_draft_spelling_gets_its_validator(declared, cls):
    assert eventtypes.validator_class({"$schema": declared}) is cls


def test_every_draft_jsonschema_knows_is_accepted_and_an_unknown_one_names_them():
    for cls in (validators.Draft4Validator, validators.Draft6Validator, validators.Draft7Validator,
                validators.Draft201909Validator, validators.Draft202012Validator):
        declared = cls.META_SCHEMA["$schema"]
        assert eventtypes.validator_class({"$schema": declared}) is cls
        assert eventtypes.validator_class({"$schema": declared.rstrip("#") + "#"}) is cls
    assert eventtypes.validator_class({"$schema": "http://json-schema.org/draft/2020-12/schema#"}) \
        is validators.Draft202012Validator
    assert eventtypes.validator_class({}) is validators.Draft7Validator
    with pytest.raises(InvalidArgumentError) as refused:
        eventtypes.validator_class({"$schema": "https://example.com/my-draft"})
    assert str(refused.value).startswith("$schema 'https://example.com/my-draft' is not one of ")
    for name in ("draft-04", "draft-06", "draft-07", "2019-09", "2020-12"):
        assert name in str(refused.value)


def _ingest(tmp_path):
    eventtypes.add(tmp_path, "t.order", SCHEMA)
    eventtypes.finalize(tmp_path, "t.order", "1.0")
    secret = channels.add(tmp_path, "c")
    return Ingest(channels.Channels(tmp_path), eventtypes.EventTypes(tmp_path), 4096), secret


def _event(**extra):
    ev = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t.order", "version": "1.0", "data": {"n": 1}}
    ev.update(extra)
    return ev


def _check(ingest, secret, body, content_type="application/cloudevents+json", signature=None):
    headers = {"Content-Type": content_type,
               "X-Hub-Signature": signature or signing.sign(body, secret)}
    return ingest.check(ingest.channel("c"), body, headers)


def test_signature_is_checked_before_size_content_type_and_json(tmp_path):
    ingest, secret = _ingest(tmp_path)
    with pytest.raises(Refusal) as refused:
        _check(ingest, secret, b"x" * 5000, "text/plain", signature="sha256=00")
    assert refused.value.status == 401
    with pytest.raises(Refusal) as refused:
        _check(ingest, secret, b"x" * 5000, "text/plain")
    assert (refused.value.status, refused.value.code) == (413, "PayloadTooLarge")
    with pytest.raises(Refusal) as refused:
        _check(ingest, secret, b"not json", "text/plain")
    assert (refused.value.status, refused.value.code) == (415, "UnsupportedMediaType")
    with pytest.raises(Refusal) as refused:
        ingest.channel("nope")
    assert refused.value.status == 404


def test_schema_violation_names_the_path_and_rule(tmp_path):
    ingest, secret = _ingest(tmp_path)
    with pytest.raises(Refusal) as refused:
        _check(ingest, secret, json.dumps(_event(data={"n": "x"})).encode())
    assert refused.value.code == "SchemaViolation"
    assert refused.value.reason == "schema violation at data.n: 'x' is not of type 'integer' (rule type)"


def test_a_batch_is_all_or_nothing_and_names_the_index(tmp_path):
    ingest, secret = _ingest(tmp_path)
    body = json.dumps([_event(id="a"), _event(id="b", version="3")]).encode()
    with pytest.raises(Refusal) as refused:
        _check(ingest, secret, body, "application/cloudevents-batch+json")
    assert refused.value.reason.startswith("event 1: ") and refused.value.code == "UnknownEventType"


def test_the_first_load_is_seen_by_every_thread_at_once(tmp_path):
    channels.add(tmp_path, "c")
    seen = channels.Channels(tmp_path)
    found = []
    threads = [threading.Thread(target=lambda: found.append(seen.get("c"))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 16 and all(f is not None for f in found)


def test_a_rotated_secret_keeps_the_old_one_valid_for_the_grace_only(tmp_path, monkeypatch):
    old = channels.add(tmp_path, "c")
    new, until = channels.rotate(tmp_path, "c")
    assert abs(until - (time.time() + channels.ROTATE_GRACE)) < 5
    channel = channels.load_all(tmp_path)["c"]
    body = b"{}"
    assert channel.verify(body, signing.sign(body, new))
    assert channel.verify(body, signing.sign(body, old))
    assert not channel.verify(body, signing.sign(body, "other"))
    assert not channel.verify(body, None)
    later = time.time() + channels.ROTATE_GRACE + 1
    monkeypatch.setattr(channels.time, "time", lambda: later)
    assert not channel.verify(body, signing.sign(body, old))
    assert channel.verify(body, signing.sign(body, new))


def test_seen_forgets_past_its_count_and_age(monkeypatch):
    seen = Seen(limit=3, age=10)
    for n in range(4):
        seen.add(("/s", str(n)))
    assert ("/s", "0") not in seen and ("/s", "3") in seen
    now = time.time()
    monkeypatch.setattr("eventbus.netapi.cloudevents.ingest.time.time", lambda: now + 11)
    assert ("/s", "3") not in seen


def test_counts_accepted_per_type_and_refused_per_code(tmp_path):
    ingest, secret = _ingest(tmp_path)
    result = _check(ingest, secret, json.dumps(_event()).encode())
    ingest.remember(result)
    try:
        _check(ingest, secret, json.dumps(_event(id="2", data={})).encode())
    except Refusal as refusal:
        ingest.refused(refusal.code, refusal.status)
    ingest.refused(None, 401)
    ingest.refused(None, 404)
    assert ingest.counts() == {"accepted": {"t.order": 1},
                               "refused": {(400, "SchemaViolation"): 1, (401, "BadSignature"): 1,
                                           (404, "UnknownChannel"): 1}}


def test_rotate_with_no_grace_revokes_the_old_secret_at_once(tmp_path):
    old = channels.add(tmp_path, "c")
    new, until = channels.rotate(tmp_path, "c", grace=0)
    assert until is None
    channel = channels.load_all(tmp_path)["c"]
    assert not channel.verify(b"{}", signing.sign(b"{}", old))
    assert channel.verify(b"{}", signing.sign(b"{}", new))
    with pytest.raises(InvalidArgumentError):
        channels.rotate(tmp_path, "c", grace=-1)


def test_state_lives_under_var_lib_and_a_legacy_directory_is_moved_there_once(tmp_path):
    legacy = tmp_path / "cloudevents"
    eventtypes.add(tmp_path, "t.order", SCHEMA)
    secret = channels.add(tmp_path, "c")
    state = tmp_path / "var/lib/eventbus/cloudevents"
    assert sorted(p.name for p in state.iterdir()) == ["channels.json", "eventtypes.json", "secrets"]
    assert not legacy.exists()
    state.rename(legacy)   # as an earlier version left it
    assert channels.load_all(tmp_path)["c"].secret == secret
    assert not legacy.exists() and (state / "secrets" / "c").is_file()
    assert eventtypes.listing(tmp_path) == [("t.order", "1.0", False)]
