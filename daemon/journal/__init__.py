"""The master's journal writer: every bus event on disk before a subscriber gets it (docs/journal.md)."""
