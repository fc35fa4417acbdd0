"""``python -m eventbus.daemon.reactor MASTER_CONFIG [--after SEQ]``: the reactor process the master starts."""
import sys

from eventbus.daemon.reactor.service import main

sys.exit(main())
