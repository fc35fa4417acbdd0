"""The bus's doors under the fuzz targets, bounded: the intake frame check and the control verbs (tests/fuzz/bus.py)."""
from tests.fuzz.props import property_test

test_intake = property_test("intake", 600)
test_control = property_test("control", 300)
