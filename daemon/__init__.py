"""The eventbus daemons: master and minion, each running a local bus."""
