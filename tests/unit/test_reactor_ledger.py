"""The reactor's ledger of what ran: survives reopening, ignores a torn line, forgets what the cursor passed."""
from __future__ import annotations

from pathlib import Path

from eventbus.daemon.reactor import ledger as reactor_ledger
from eventbus.daemon.reactor.ledger import Ledger


def test_recorded_entries_are_there_after_reopening(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "r" / "done")
    ledger.record(("0:a/*", 10, 0))
    ledger.record(("1:with space/*", 11, 2))
    ledger.sync()
    ledger.close()
    again = Ledger(tmp_path / "r" / "done")
    assert ("0:a/*", 10, 0) in again and ("1:with space/*", 11, 2) in again
    assert ("0:a/*", 10, 1) not in again


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "done"
    path.write_bytes(b"0:a 5 0\n0:a 6")
    ledger = Ledger(path)
    assert ("0:a", 5, 0) in ledger and len(ledger.done) == 1
    ledger.record(("0:a", 7, 0))
    ledger.close()
    # The torn piece and the new line do not merge into a wrong entry.
    assert Ledger(path).done == {("0:a", 5, 0), ("0:a", 7, 0)}


def test_compaction_keeps_only_entries_after_the_cursor(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reactor_ledger, "COMPACT_AFTER", 10)
    ledger = Ledger(tmp_path / "done")
    for seq in range(20):
        ledger.record(("0:a", seq, 0))
    ledger.compact(14)
    ledger.close()
    assert {entry[1] for entry in Ledger(tmp_path / "done").done} == set(range(15, 20))
