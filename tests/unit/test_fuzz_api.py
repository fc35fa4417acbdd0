"""HTTP under the fuzz targets, bounded: the gate's framing, and the whole API in-process (tests/fuzz/api.py)."""
from tests.fuzz.props import property_test

test_http_head = property_test("http_head", 200)
test_http_api = property_test("http_api", 150)
