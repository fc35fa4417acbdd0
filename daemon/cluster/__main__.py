"""``python -m eventbus.daemon.cluster MASTER_CONFIG``: the cluster process the master starts."""
import sys

from eventbus.daemon.cluster.service import main

sys.exit(main())
