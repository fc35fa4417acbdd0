"""A reader's durable position: saved atomically, read back, bad files named."""
from __future__ import annotations

import pytest

from eventbus.bus.cursor import Cursor
from eventbus.errors import CursorError


def test_a_saved_position_is_read_back_by_a_new_cursor(tmp_path):
    path = tmp_path / "deep" / "reactor.cursor"
    assert Cursor(path).load() is None
    Cursor(path).save(1_764_000_000_000_042)
    assert Cursor(path).load() == 1_764_000_000_000_042
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["reactor.cursor"], "no temporary file left behind"


def test_a_damaged_cursor_is_one_clear_error(tmp_path):
    path = tmp_path / "x.cursor"
    path.write_text("12ab\n")
    with pytest.raises(CursorError, match="x.cursor holds '12ab'"):
        Cursor(path).load()


def test_an_unwritable_place_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CursorError, match="cannot save cursor"):
        Cursor(blocker / "x.cursor").save(5)
