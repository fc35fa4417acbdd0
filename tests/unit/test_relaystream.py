"""One minion's relay stream on the master: de-duplication by seq, kept across a master restart."""
from __future__ import annotations

import msgpack

from eventbus.daemon.link import protocol
from eventbus.daemon.link.relaystream import RelaySeqs, RelayStream


def frames(*ns: int) -> list[bytes]:
    return [b"myco/e\x00" + msgpack.packb({"n": n}) for n in ns]


def ns(published: list[bytes]) -> list[int]:
    return [msgpack.unpackb(f.partition(b"\x00")[2])["data"]["n"] for f in published]


def test_each_seq_is_published_once_whatever_is_resent(tmp_path):
    seqs = RelaySeqs(tmp_path)
    stream = RelayStream("web1", seqs)
    assert stream.last == 0
    first = stream.batch(1, 0, frames(1, 2), 4096)
    assert ns(first.published) == [1, 2] and first.reply == protocol.ack(2) and first.refused == []
    assert first.numbers == [1, 2]
    assert ns(stream.batch(1, 0, frames(1, 2, 3), 4096).published) == [3]
    assert stream.batch(5, 0, frames(5), 4096)[:3] == ([], [], protocol.resend(3))
    restarted = RelayStream("web1", RelaySeqs(tmp_path))
    assert restarted.last == 3 and restarted.batch(2, 0, frames(2, 3), 4096)[:3] == ([], [], protocol.ack(3))
    assert RelayStream("web2", seqs).last == 0, "seqs are per minion"


def test_a_fleet_master_keeps_every_relay_seq_it_has_across_restarts(tmp_path):
    """With ``taken`` (a master of a fleet-wide bus), the seqs had here are exact ranges, not a high mark."""
    RelayStream("web1", RelaySeqs(tmp_path)).batch(1, 0, frames(1, 2, 3), 4096)  # before the cluster key
    seqs = RelaySeqs(tmp_path, taken=True)
    assert seqs.taken("web1").pairs() == [(0, 3)]  # everything up to the newest accepted
    stream = RelayStream("web1", seqs)
    stream.batch(8, 7, frames(8, 9), 4096)  # a failover: 4..7 went to another master
    assert seqs.taken("web1").pairs() == [(0, 3), (8, 9)]
    seqs.take("web1", 5, 5)  # imported from the fleet stream
    again = RelaySeqs(tmp_path, taken=True)
    assert again.taken("web1").pairs() == [(0, 3), (5, 5), (8, 9)]
    assert 4 not in again.taken("web1") and 9 in again.taken("web1")
