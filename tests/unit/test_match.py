"""Salt's five match types and watch's glob-or-regex expressions."""
from __future__ import annotations

import pytest

from eventbus.bus.match import expression, matcher


@pytest.mark.parametrize("match_type, pattern, tag, expected", [
    ("startswith", "salt/job", "salt/job/123/new", True),
    ("startswith", "salt/job", "x/salt/job", False),
    ("startswith", "", "anything", True),
    ("endswith", "/ret", "salt/job/1/ret", True),
    ("endswith", "/ret", "salt/job/1/ret/x", False),
    ("find", "job", "salt/job/1", True),
    ("find", "jobs", "salt/job/1", False),
    ("regex", r"salt/job/\d+/new", "salt/job/123/new", True),
    ("regex", r"job/\d+", "salt/job/123", False),  # anchored at the start, like Salt
    ("regex", r"salt/job/\d+", "salt/job/123/new", True),  # not anchored at the end
    ("fnmatch", "salt/job/*/ret/*", "salt/job/1/ret/minion", True),
    ("fnmatch", "salt/job/*/ret", "salt/job/1/ret/minion", False),
    ("fnmatch", "salt/[ab]uth", "salt/auth", True),
])
def test_match_types(match_type, pattern, tag, expected):
    assert matcher(pattern, match_type)(tag) is expected


def test_unknown_match_type_is_an_error():
    with pytest.raises(ValueError, match="unknown match_type 'prefix'"):
        matcher("x", "prefix")


def test_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        matcher("salt/(job", "regex")


@pytest.mark.parametrize("pattern, tag, expected", [
    ("*", "anything/at/all", True),
    ("salt/job/*/new", "salt/job/20130802/new", True),
    ("salt/job/*/new", "salt/job/20130802/ret", False),
    (r"salt/job/\d+/new", "salt/job/20130802/new", True),    # regex where the glob fails
    (r"salt/job/\d+/new", "salt/job/2013x/new", False),
    (r"salt/(job", "salt/(job", True),                       # bad regex: glob only
    ("salt/auth", "salt/auth/extra", False),                 # full match, like Salt's expr_match
])
def test_watch_expression(pattern, tag, expected):
    assert expression(pattern)(tag) is expected
