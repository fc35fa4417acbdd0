"""The link protocol under the fuzz targets, bounded: a rogue accepted minion, a master (tests/fuzz/link.py)."""
from tests.fuzz.props import property_test

test_link_master = property_test("link_master", 300)
test_link_minion = property_test("link_minion", 300)
