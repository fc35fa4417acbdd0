"""Every config file's loader on arbitrary YAML under the fuzz targets, bounded (tests/fuzz/configs.py)."""
from tests.fuzz.props import property_test

test_config_master = property_test("config_master", 150)
test_config_minion = property_test("config_minion", 150)
test_config_api = property_test("config_api", 150)
test_config_forward = property_test("config_forward", 150)
