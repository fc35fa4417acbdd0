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
    assert ns(stream.batch(1, 0, frames(1, 2, 3), 4096).published) == [3]
    assert stream.batch(5, 0, frames(5), 4096) == ([], [], protocol.resend(3))
    restarted = RelayStream("web1", RelaySeqs(tmp_path))
    assert restarted.last == 3 and restarted.batch(2, 0, frames(2, 3), 4096) == ([], [], protocol.ack(3))
    assert RelayStream("web2", seqs).last == 0, "seqs are per minion"
