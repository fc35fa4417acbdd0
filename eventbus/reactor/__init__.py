"""Reactor rules: the master file's ``reactor`` list, matched and rendered without I/O."""
