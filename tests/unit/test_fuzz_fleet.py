"""What the fleet-wide bus reads that others wrote, under the fuzz targets, bounded (tests/fuzz/fleet.py)."""
from tests.fuzz.props import property_test

test_fleet_record = property_test("fleet_record", 300)
test_fleet_state = property_test("fleet_state", 200)
