"""The fleet-wide bus's sans-IO pieces: the cluster key, stream records, identity ranges, the origin index."""
from __future__ import annotations

import json
import os

import pytest

from eventbus.daemon.cluster import origins
from eventbus.daemon.cluster.ranges import MAX_RANGES, Ranges
from eventbus.cluster import records, settings
from eventbus.errors import ConfigError, MalformedFrameError


# -- the cluster key -----------------------------------------------------------------------------

def test_the_cluster_key_defaults_and_credentials():
    parsed = settings.parse({"servers": "nats://10.0.0.1:4222", "user": "fleet", "password": "pw-secret-1"}, "master")
    assert parsed.servers == ("nats://10.0.0.1:4222",)
    assert (parsed.stream, parsed.replicas, parsed.subject_prefix) == ("EVENTBUS", 1, "eventbus")
    assert parsed.connect_options() == {"user": "fleet", "password": "pw-secret-1"}
    assert "pw-secret-1" not in repr(parsed) and "pw-secret-1" not in json.dumps(parsed.shown())
    assert parsed.hide("refused pw-secret-1") == "refused <hidden>"
    assert settings.parse(None, "master") is None


def test_a_secret_by_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_TOKEN", "tok-123456")
    parsed = settings.parse({"token_env": "FLEET_TOKEN"}, "master")
    assert parsed.connect_options() == {"token": "tok-123456"} and parsed.secrets == ("tok-123456",)


@pytest.mark.parametrize("block, key", [
    ({"servers": []}, "cluster.servers"),
    ({"servers": ["http://x:1"]}, "cluster.servers"),
    ({"servers": ["nats://a:4222", "nats://a:4222"]}, "cluster.servers"),
    ({"servers": ["nats://a:99999"]}, "cluster.servers"),
    ({"stream": "A.B"}, "cluster.stream"),
    ({"stream": "has space"}, "cluster.stream"),
    ({"replicas": 0}, "cluster.replicas"),
    ({"replicas": True}, "cluster.replicas"),
    ({"subject_prefix": "a.*"}, "cluster.subject_prefix"),
    ({"subject_prefix": "a..b"}, "cluster.subject_prefix"),
    ({"password": "x-password-1"}, "cluster.password"),
    ({"creds": "/no/such/file.creds"}, "cluster.creds"),
    ({"colour": "red"}, "cluster.colour"),
    ("nats://a:4222", "cluster"),
])
def test_a_bad_cluster_key_is_one_error_naming_it(block, key):
    with pytest.raises(ConfigError) as caught:
        settings.parse(block, "master")
    assert caught.value.key == key and key in str(caught.value) and "\n" not in str(caught.value)
    assert "x-password-1" not in str(caught.value)


# -- stream records -------------------------------------------------------------------------------

@pytest.mark.parametrize("tag, subject", [
    ("salt/job/1/ret", "eventbus.salt.job.1.ret"),
    ("a b/*/>", "eventbus.a_b._._"),
    ("a//b/", "eventbus.a._.b._"),
    ("x.y", "eventbus.x.y"),
])
def test_every_tag_has_a_valid_subject(tag, subject):
    assert records.subject_for("eventbus", tag) == subject


def test_identities_and_a_record_round_trip():
    assert records.relay_identity("web1", 17) == "web1:17"
    assert records.split_identity("host:with:colons:42") == ("host:with:colons", 42)
    assert records.split_identity("web1:") is None and records.split_identity("nope") is None
    body = records.body(5, "t/x", {"n": 1})
    assert json.loads(body) == {"seq": 5, "tag": "t/x", "data": {"n": 1}}
    event = records.decode(99, body, records.headers("web1:17", "m1"))
    assert (event.stream_seq, event.tag, event.data, event.origin, event.identity) == \
        (99, "t/x", {"n": 1, "_origin": "m1"}, "m1", "web1:17")
    assert event.as_record() == {"seq": 99, "tag": "t/x", "data": {"n": 1, "_origin": "m1"}}


@pytest.mark.parametrize("body, headers", [
    (b"not json", {"Nats-Msg-Id": "a:1", "Eventbus-Origin": "m"}),
    (b'{"tag": "", "data": {}}', {"Nats-Msg-Id": "a:1", "Eventbus-Origin": "m"}),
    (b'{"tag": "t", "data": []}', {"Nats-Msg-Id": "a:1", "Eventbus-Origin": "m"}),
    (b'[1, 2]', {"Nats-Msg-Id": "a:1", "Eventbus-Origin": "m"}),
    (b'{"tag": "t", "data": {}}', {"Nats-Msg-Id": "a:1"}),
    (b'{"tag": "t", "data": {}}', None),
])
def test_a_message_no_master_wrote_is_refused(body, headers):
    with pytest.raises(MalformedFrameError):
        records.decode(1, body, headers)


# -- identity ranges ------------------------------------------------------------------------------

def test_ranges_merge_touching_and_overlapping_numbers():
    ranges = Ranges()
    for n in (5, 7, 6, 1, 2, 10):
        ranges.add(n)
    assert ranges.pairs() == [(1, 2), (5, 7), (10, 10)]
    assert ranges.add(3, 4) and ranges.pairs() == [(1, 7), (10, 10)]
    assert not ranges.add(2, 6)
    assert 7 in ranges and 8 not in ranges and 0 not in ranges
    other = Ranges([(8, 9), (20, 30)])
    assert ranges.merge(other) and ranges.pairs() == [(1, 10), (20, 30)]
    assert Ranges.unpack(ranges.pack()) == ranges


def test_ranges_are_bounded_and_a_bad_value_is_empty():
    ranges = Ranges()
    for n in range(0, 4 * MAX_RANGES, 2):
        ranges.add(n)
    assert len(ranges) == MAX_RANGES and 4 * MAX_RANGES - 2 in ranges and 0 not in ranges
    for garbage in (b"", b"\xc1", b"\x93\x01\x02\x03", b"\x91\x92\xa1a\x01"):
        assert len(Ranges.unpack(garbage)) == 0


# -- the origin index -------------------------------------------------------------------------------

def test_the_origin_index_hands_each_record_once_across_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(origins, "PART_BYTES", 64)
    writer = origins.OriginWriter(tmp_path)
    reader = origins.OriginReader(tmp_path, after=0)
    writer.note([(10, origins.RELAY, 100, "web1"), (11, origins.RELAY, 101, "web1")])
    assert reader.lookup(10) == {10: (origins.RELAY, 100, "web1")}
    for seq in range(12, 40, 3):  # many small parts
        writer.note([(seq, origins.IMPORT, seq * 2, "m2")])
    found = reader.lookup(40)
    assert found == {11: (origins.RELAY, 101, "web1"),
                     **{seq: (origins.IMPORT, seq * 2, "m2") for seq in range(12, 40, 3)}}
    assert reader.lookup(40) == {}
    parts = sorted(os.listdir(tmp_path))
    assert len(parts) > 2
    reader.forget_before(30)
    left = sorted(os.listdir(tmp_path))
    assert left[-1] == parts[-1] and len(left) < len(parts)
    restarted = origins.OriginReader(tmp_path, after=30)  # a restarted exporter at its position
    writer.note([(50, origins.RELAY, 7, "web2")])
    assert restarted.lookup(50) == {33: (origins.IMPORT, 66, "m2"), 36: (origins.IMPORT, 72, "m2"),
                                    39: (origins.IMPORT, 78, "m2"), 50: (origins.RELAY, 7, "web2")}
    writer.close()


def test_a_torn_record_is_read_once_whole(tmp_path):
    writer = origins.OriginWriter(tmp_path)
    reader = origins.OriginReader(tmp_path, after=0)
    whole = origins.RECORD.pack(5, 9, origins.RELAY, 4) + b"web1"
    os.makedirs(tmp_path, exist_ok=True)
    writer.note([(1, origins.RELAY, 1, "a")])
    os.write(writer.fd, whole[:10])
    assert reader.lookup(5) == {1: (origins.RELAY, 1, "a")}
    os.write(writer.fd, whole[10:])
    assert reader.lookup(5) == {5: (origins.RELAY, 9, "web1")}
