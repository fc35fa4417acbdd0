"""Fuzz targets for every input a stranger or an accepted minion can reach (docs/fuzz.md)."""
