"""The reactor: a child process of the master running rules' actions for matching events (docs/reactor.md)."""
