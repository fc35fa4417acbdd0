"""What the daemons read back from disk, corrupted, under the fuzz targets, bounded (tests/fuzz/stores.py)."""
from tests.fuzz.props import property_test

test_journal = property_test("journal", 100)
test_spool = property_test("spool", 150)
test_outbox = property_test("outbox", 100)
