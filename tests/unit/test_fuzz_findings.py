"""What the fuzz targets found (docs/fuzz.md, "Findings"), each kept as the input that showed it."""
from __future__ import annotations

import json
import struct
import zlib

import msgpack
import pytest

from eventbus.daemon.journal.writer import Journal
from eventbus.daemon.link.spool import RECORD, SEQ, Spool
from eventbus.journal import format as journalformat
from eventbus.bus import payload
from eventbus.forwarding import formats
from eventbus.journal.reader import JournalReader
from eventbus.netapi import auth, limits
from eventbus.netapi.sse.stream import event_record

MAX = 4096


def bus_frame(seq: int, epoch: int) -> bytes:
    return struct.pack(">QQ", seq, epoch) + b"t\x00\x81\xa1n\x01"


# -- F1: event data whose map keys JSON cannot hold ---------------------------------------------------


@pytest.mark.parametrize("key", [b"raw", msgpack.ExtType(5, b"x")], ids=["bytes", "ext"])
def test_an_accepted_event_with_a_non_text_key_is_streamed_and_forwarded(key):
    frame = b"app/raw\x00" + msgpack.packb({key: 1, "nested": {key: [key]}, "n": 2}, use_bin_type=True)
    cut = payload.check_published(frame, MAX)  # the daemon's intake takes it, as it always has
    data = payload.unpack_data(frame[cut + 1:])
    sse = event_record(7, "app/raw", data).raw.decode()
    body = json.loads(sse.split("data: ", 1)[1])
    assert body["tag"] == "app/raw" and body["data"]["n"] == 2 and len(body["data"]["nested"]) == 1
    for fmt in formats.FORMATS:
        sent = json.loads(formats.outgoing(7, "app/raw", data, fmt).body)
        assert "n" in json.dumps(sent)


# -- F2: a rogue accepted minion's batch running past the last seq -------------------------------------


def test_a_batch_past_the_last_seq_is_refused_not_a_crash_of_the_master(tmp_path):
    import zmq

    from eventbus.daemon.link import protocol
    from eventbus.daemon.link import master_session as ms
    from eventbus.daemon.link.logentries import Refuse
    from eventbus.daemon.link.relaystream import RelaySeqs
    from eventbus import keys

    machine = ms.MasterSessions(keys.KeyStore(tmp_path / "pki"), RelaySeqs(tmp_path / "relay"), heartbeat=1.0,
                                auto_accept=True, max_event_size=MAX)
    key = zmq.curve_keypair()[0].decode()
    machine.receive(b"r", key, protocol.hello("m1"), 0.0)
    frames = [payload.pack_frame("app/x", {"n": n}, MAX) for n in range(2)]
    actions = machine.receive(b"r", key, protocol.events(2 ** 64 - 1, 2 ** 64 - 2, frames), 0.1)
    assert [type(a) for a in actions] == [Refuse]


# -- F3: files in the journal directory that are not segments ---------------------------------------


def test_a_stray_jnl_file_neither_stops_the_journal_nor_is_read(tmp_path):
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    journal.open()
    journal.append([(1_000_001, bus_frame(1_000_001, 1_000_000))])
    journal.close()
    segment, = tmp_path.glob("*.jnl")
    (tmp_path / "1.jnl").write_bytes(b"not a segment")                    # a stray file with a short name
    (tmp_path / "\u00b2.jnl").write_bytes(b"")                            # a superscript digit
    (tmp_path / ("0" * 8 + segment.name)).write_bytes(segment.read_bytes())  # the same base, spelled longer
    reader = JournalReader(tmp_path)
    assert [seq for seq, _ in reader.read(0, 10).events] == [1_000_001]
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    assert journal.open() == 1_000_001 and journal.failed is None
    journal.append([(1_000_002, bus_frame(1_000_002, 1_000_000))])
    journal.close()
    assert [seq for seq, _ in JournalReader(tmp_path).read(0, 10).events] == [1_000_001, 1_000_002]


# -- F4: relay spool seqs past what the link can carry ------------------------------------------------


def test_a_spool_head_at_the_last_seq_does_not_stop_the_relay(tmp_path):
    (tmp_path / "head").write_bytes(SEQ.pack(2 ** 64 - 1))
    spool = Spool(tmp_path, 10)
    spool.append([b"t\x00\x80"])
    seq, frame = spool.read(spool.head, 10)[0]
    assert frame == b"t\x00\x80" and seq < 2 ** 63
    spool.close()


def test_a_spool_record_with_a_seq_out_of_its_run_is_cut_off(tmp_path):
    first = 1_000_000
    good = RECORD.pack(3, first) + b"t\x00\x80"
    (tmp_path / f"seg-{first:020d}").write_bytes(good + RECORD.pack(3, 2 ** 64 - 1) + b"u\x00\x80")
    spool = Spool(tmp_path, 10)
    assert spool.next_seq == first + 1
    spool.append([b"v\x00\x80"])
    assert spool.read(0, 10) == [(first, b"t\x00\x80"), (first + 1, b"v\x00\x80")]
    spool.close()


# -- F11: a request line whose HTTP version CherryPy cannot read ---------------------------------------


@pytest.mark.parametrize("version", [b"HTTP/1.-1", b"HTTP/01.1", b"HTTP/ 1.1", b"HTTP/1.1x", b"HTTP/1"])
def test_the_gate_refuses_a_malformed_http_version(version):
    verdict = limits.examine(b"GET / " + version + b"\r\nHost: a\r\n\r\n", 1024)
    assert verdict.status == 400 and "HTTP version" in verdict.reason


def test_the_gate_takes_the_versions_clients_send():
    for version in (b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"):
        assert limits.examine(b"GET / " + version + b"\r\nHost: a\r\n\r\n", 1024).status == 200


def test_a_segment_copied_under_another_name_is_not_read_out_of_order(tmp_path):
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    journal.open()
    journal.append([(seq, bus_frame(seq, 1_000_000)) for seq in range(1_000_001, 1_000_004)])
    journal._roll(1_000_004)
    journal.append([(seq, bus_frame(seq, 1_000_000)) for seq in range(1_000_004, 1_000_006)])
    journal.close()
    newest = max(tmp_path.glob("*.jnl"))
    (tmp_path / f"{500_000:020d}.jnl").write_bytes(newest.read_bytes())  # its header names base 1_000_004
    reader, seqs = JournalReader(tmp_path), []
    for _ in range(4):
        seqs += [seq for seq, _ in reader.read(seqs[-1] if seqs else 0, 10).events]
    assert seqs == list(range(1_000_001, 1_000_006))
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    assert journal.open() == 1_000_005 and journal.failed is None
    journal.close()


def test_a_corrupt_record_in_an_older_spool_segment_drops_that_segment_and_the_relay_goes_on(tmp_path):
    first, second = 1_000_000, 1_000_003
    records = [RECORD.pack(3, first), b"a\x00\x80", RECORD.pack(3, 7 * 10 ** 15), b"b\x00\x80",
               RECORD.pack(3, first + 2), b"c\x00\x80"]
    (tmp_path / f"seg-{first:020d}").write_bytes(b"".join(records))
    (tmp_path / f"seg-{second:020d}").write_bytes(RECORD.pack(3, second) + b"d\x00\x80")
    spool = Spool(tmp_path, 10)
    got = spool.read(spool.head, 10)
    assert [seq for seq, _ in got] == [first, second] and got[-1][1] == b"d\x00\x80"
    assert spool.head == second - 1 and spool.dropped == 2  # the master is told (floor) those two are gone
    spool.close()


# -- F12: a users file with a line that is not UTF-8 -------------------------------------------------------


def test_a_users_file_line_in_another_encoding_leaves_the_other_users_their_logins(tmp_path):
    users = tmp_path / "users"
    users.write_bytes(b"alice:scrypt$2$1$1$c2FsdA$aGFzaA\nj\xf6rg:scrypt$2$1$1$x$y\n")
    assert auth.read_users(users)["alice"] == "scrypt$2$1$1$c2FsdA$aGFzaA"


def test_a_spool_segment_named_seq_zero_is_not_taken_for_the_spool(tmp_path):
    (tmp_path / f"seg-{0:020d}").write_bytes(RECORD.pack(3, 5) + b"t\x00\x80")
    spool = Spool(tmp_path, 10)
    spool.append([b"u\x00\x80"])
    assert [frame for _, frame in spool.read(spool.head, 10)] == [b"u\x00\x80"]
    spool.close()


def test_a_spool_head_just_below_the_limit_keeps_its_numbering_across_a_restart(tmp_path):
    (tmp_path / "head").write_bytes(SEQ.pack(2 ** 63 - 1))
    spool = Spool(tmp_path, 10)
    spool.append([b"t\x00\x80"])
    numbered = spool.next_seq
    spool.close()
    again = Spool(tmp_path, 10)
    assert again.next_seq == numbered and [f for _, f in again.read(0, 10)] == [b"t\x00\x80"]
    again.close()


def test_a_sealed_segment_record_out_of_order_behind_a_good_checksum_ends_that_segment(tmp_path):
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    journal.open()
    for seq in range(1_000_001, 1_000_004):
        journal.append([(seq, bus_frame(seq, 1_000_000))])
    journal._roll(1_000_004)  # the first segment is sealed: read through its .idx from now on
    journal.append([(1_000_004, bus_frame(1_000_004, 1_000_000))])
    journal.close()
    sealed = min(tmp_path.glob("*.jnl"))
    raw = bytearray(sealed.read_bytes())
    second = journalformat.SEGMENT_HEADER_SIZE + journalformat.RECORD_OVERHEAD + len(bus_frame(0, 0))
    raw[second:second + 8] = struct.pack(">Q", 2 ** 56)  # the second record's seq, far ahead
    stop = second + journalformat.RECORD_OVERHEAD + len(bus_frame(0, 0))
    raw[stop - 4:stop] = journalformat.CRC.pack(zlib.crc32(raw[second:stop - 4]))
    sealed.write_bytes(bytes(raw))
    reader, seqs = JournalReader(tmp_path), []
    for _ in range(4):  # a read stops at a gap; the next one goes on after it
        seqs += [seq for seq, _ in reader.read(seqs[-1] if seqs else 0, 10).events]
    assert seqs == [1_000_001, 1_000_004]


def test_an_outbox_batch_row_that_is_not_msgpack_is_an_outbox_error(tmp_path):
    import sqlite3

    from eventbus.errors import OutboxError
    from eventbus.forwarding.outbox import Outbox

    box = Outbox(tmp_path / "b.outbox", 10)
    box.append([(1, "t/a", {"n": 1}), (2, "t/b", {"n": 2})], 2)
    box.close()
    db = sqlite3.connect(tmp_path / "b.outbox")
    db.execute("UPDATE batches SET events = ?", (b"\x96\x01\xa3t/a\x81\xa1n\x01\xff\xff",))
    db.commit()
    db.close()
    box = Outbox(tmp_path / "b.outbox", 10)
    with pytest.raises(OutboxError):
        box.read(10)
    box.close()


def _load_master(tmp_path, text: bytes):
    from eventbus import config

    path = tmp_path / "master"
    path.write_bytes(text)
    return config.load(config.MasterConfig, path)


@pytest.mark.parametrize("text, finding", [
    (b"log_level: info\nid: j\xf6rg\n", "F6 config not UTF-8"),
    (b"reactor: " + b"[" * 2000 + b"]" * 2000 + b"\n", "F7 config nested too deep"),
    (b"sock_dir: \"run\\0/sock\"\n", "F8 config path with a NUL byte"),
    (b"root_dir: \"r\\0\"\n", "F8 config path with a NUL byte"),
    (b"heartbeat_interval: .nan\n", "F9 config seconds not finite"),
    (b"journal_max_age: .inf\n", "F9 config seconds not finite"),
    (b"pki_dir: ~no-such-user-here/pki\n", "F10 config path ~user of no user"),
    (b"max_event_size: 0x_\n", "F14 config scalar PyYAML cannot build"),
    (b"root_dir: 2001-13-01\n", "F14 config scalar PyYAML cannot build"),
], ids=["not-utf8", "nested", "nul-path", "nul-root", "nan", "inf", "tilde-user", "hex-empty", "no-such-date"])
def test_a_bad_config_file_is_one_config_error(tmp_path, text, finding):
    from eventbus.errors import ConfigError

    with pytest.raises(ConfigError):
        _load_master(tmp_path, text)



def test_an_api_users_file_of_a_tilde_user_of_no_user_is_one_config_error(tmp_path):
    """F15 (config_api): a ``~user`` users_file of no such user was a RuntimeError from pathlib."""
    from eventbus import config
    from eventbus.errors import ConfigError

    path = tmp_path / "api"
    path.write_bytes(b"external_auth:\n  file:\n    users_file: ~no-such-user-here/users\n    alice: ['*']\n")
    with pytest.raises(ConfigError, match="no-such-user-here"):
        config.load(config.ApiConfig, path)


def test_a_broker_secret_file_of_a_tilde_user_of_no_user_is_one_config_error(tmp_path):
    """F15: the same ``~user`` in a broker's ``password_file`` reference."""
    from eventbus.errors import ConfigError
    from eventbus.forwarding import config as forwardconf

    path = tmp_path / "forward"
    path.write_text("brokers:\n  - name: pg\n    type: sql\n    dialect: postgresql\n"
                    "    password_file: ~no-such-user-here/pw\n")
    with pytest.raises(ConfigError, match="no-such-user-here"):
        forwardconf.load(path)


def test_a_purged_file_of_a_torn_run_behind_a_good_checksum_is_taken_for_corrupt(tmp_path, caplog):
    """F16 (journal): a ``purged`` file whose runs are not whole 24-byte entries, its checksum right, was a
    struct.error out of the reader's stats (``eventbus journal``, the API's resume)."""
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    journal.open()
    journal.append([(seq, bus_frame(seq, 1_000_000)) for seq in range(1_000_001, 1_000_004)])
    journal.close()
    body = journalformat.PURGED_MAGIC + b"\x00" * 10
    (tmp_path / journalformat.PURGED_NAME).write_bytes(body + journalformat.CRC.pack(zlib.crc32(body)))
    stats = JournalReader(tmp_path).stats()
    assert (stats.first_seq, stats.last_seq) == (1_000_001, 1_000_003)
    assert "purged file is corrupt" in caplog.text


def test_a_record_numbered_near_the_u64_end_behind_a_good_checksum_does_not_stop_the_bus(tmp_path):
    """F17 (journal): a record whose seq is near 2**64 (checksum right) became the journal's last seq, and
    the bus, numbering on from it, could not pack the next event's u64 seq."""
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    journal.open()
    journal.append([(seq, bus_frame(seq, 1_000_000)) for seq in range(1_000_001, 1_000_004)])
    journal.close()
    segment = max(tmp_path.glob("*.jnl"))
    raw = bytearray(segment.read_bytes())
    last = len(raw) - journalformat.RECORD_OVERHEAD - len(bus_frame(0, 0))
    raw[last:last + 8] = struct.pack(">Q", 2 ** 64 - 2)
    raw[-4:] = journalformat.CRC.pack(zlib.crc32(raw[last:-4]))
    segment.write_bytes(bytes(raw))
    (tmp_path / f"{2 ** 64 - 10:020d}.jnl").write_bytes(segment.read_bytes()[:journalformat.SEGMENT_HEADER_SIZE])
    journal = Journal(tmp_path, 1 << 20, 3600.0, "never")
    assert journal.open() == 1_000_002 and journal.failed is None
    journal.append([(1_000_003, bus_frame(1_000_003, 1_000_000))])
    journal.close()
    assert [seq for seq, _ in JournalReader(tmp_path).read(1_000_000, 10).events] == [1_000_001, 1_000_002,
                                                                                        1_000_003]


@pytest.mark.parametrize("change", [
    "UPDATE batches SET first = 9223372036854775805, last = 9223372036854775807",  # F18: seqs at the i64 end
    "UPDATE meta SET value = 9223372036854775807 WHERE key = 'intake'",  # F18: the cursor there
    "UPDATE batches SET count = -3",  # F19: a row of fewer than no events
    "UPDATE batches SET count = 40",  # F19: more events than its seqs span
], ids=["row-seqs", "intake", "negative-count", "count-past-span"])
def test_an_outbox_whose_rows_cannot_be_is_an_outbox_error_at_open(tmp_path, change):
    """F18, F19 (outbox): rows or a cursor no forwarder writes were taken; the next append of the bus's
    events overflowed SQLite's INTEGER (an OverflowError stopped the broker), or the waiting count went
    below zero."""
    import sqlite3

    from eventbus.errors import OutboxError
    from eventbus.forwarding.outbox import Outbox

    box = Outbox(tmp_path / "b.outbox", 10)
    box.append([(1, "t/a", {"n": 1}), (2, "t/b", {"n": 2})], 2)
    box.close()
    db = sqlite3.connect(tmp_path / "b.outbox")
    db.execute(change)
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="cannot open outbox"):
        Outbox(tmp_path / "b.outbox", 10)
