"""``make cluster``: a local fleet in the foreground: a 3-node NATS JetStream cluster and two masters on it.

``python -m eventbus.cli.devcluster [DIR] [--ports CLIENT,ROUTE,MONITOR] [--masters CONF...]`` starts the
nodes under
``DIR`` (default ``run/cluster/nats``, which ``make clean`` removes) on fixed ports, so master
configs can name them: node ``n<i>`` listens for clients on ``CLIENT + i - 1`` (default 14222-14224,
beside a system nats-server on 4222), routes on ``ROUTE + i - 1`` and monitoring on ``MONITOR + i - 1``.
Once JetStream is ready it starts a master and its REST API from each config dir of ``--masters``
(``make cluster``: ``conf/cluster/a`` and ``conf/cluster/b``, whose ``cluster`` keys name the default
ports) and prints how to try the fleet; with no ``--masters`` it prints the ``cluster`` key that points a
master at the nodes. Ctrl-C, SIGTERM and SIGHUP stop every node (through ``devrun.Children``'s signal handling)
before it exits; the streams stay in ``DIR/<node>/jetstream`` for the next run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eventbus import config
from eventbus.cli.devrun import Children, Stopped, _api_login, _dev_user, _wait_bus
from eventbus.cli.natscluster import NatsCluster, NodePorts
from eventbus.errors import EventBusError

DEFAULT_DIR = Path("run/cluster/nats")
DEFAULT_PORTS = (14222, 16222, 18222)
NODES = 3


def _ports(text: str) -> tuple[int, int, int]:
    try:
        client, route, monitor = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not CLIENT,ROUTE,MONITOR (three port numbers)") from None
    if not all(0 < port and port + NODES - 1 < 65536 for port in (client, route, monitor)):
        raise argparse.ArgumentTypeError(f"{text!r}: each port (and the next {NODES - 1}) must be 1-65535")
    return client, route, monitor


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eventbus.cli.devcluster",
                                     description="A 3-node NATS JetStream cluster on 127.0.0.1, in the foreground.")
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR,
                        help=f"where the nodes' configs, logs and stores live (default {DEFAULT_DIR})")
    parser.add_argument("--ports", type=_ports, default=DEFAULT_PORTS, metavar="CLIENT,ROUTE,MONITOR",
                        help="first node's ports; the others take the next ones "
                             f"(default {','.join(map(str, DEFAULT_PORTS))})")
    parser.add_argument("--masters", nargs="*", type=Path, default=[], metavar="CONF",
                        help="config dirs (a master file, and an api file) to start on the cluster")
    return parser.parse_args(argv)


def _shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def instructions(cluster: NatsCluster) -> str:
    """What is running and how to point a master at it."""
    nodes = "\n".join(f"  {name}  {url}   monitor {monitor}/jsz   log {_shown(cluster.log_path(i))}"
                      for i, (name, url, monitor) in enumerate(zip(cluster.names, cluster.urls, cluster.monitor_urls)))
    return f"""
NATS JetStream cluster {cluster.name!r} is running, {len(cluster.names)} nodes under {_shown(cluster.directory)}:
{nodes}
Point a master at it with these keys in its master config file (each master its own id):
  id: a
  cluster:
    servers: [{', '.join(cluster.urls)}]
    stream: EVENTBUS
    replicas: {len(cluster.names)}
Ctrl-C stops every node; the streams stay in {_shown(cluster.directory)}/<node>/jetstream until `make clean`.
"""


def fleet(children: Children, cluster: NatsCluster, dirs: list[Path]) -> str:
    """Start a master (and its API, when the dir has one) from each config dir; how to try them."""
    lines = []
    for conf in dirs:
        master = config.load(config.MasterConfig, conf / "master")
        _wait_bus(children.start("master", conf), master.sock_dir, f"master {master.id}")
        line = f"  master {master.id!r} ({_shown(conf)}): fire onto it: eventbus fire '{{\"n\": 1}}' myco/hello " \
               f"--node master -c {_shown(conf)}"
        if (conf / "api").exists():
            api = config.load(config.ApiConfig, conf / "api")
            user, password = _dev_user(api)
            token = _api_login(children.start("api", conf), api, user, password)
            line += f"\n    the fleet from its API:  curl -N 'http://{api.host}:{api.port}/events?token={token}'"
        lines.append(line)
    return f"""
A local fleet is running: NATS JetStream cluster {cluster.name!r} ({', '.join(cluster.urls)}) and
{len(dirs)} masters on it. An event fired on one master is on every master's bus (with _origin) and on
every API's stream, with the same id everywhere:
{chr(10).join(lines)}
  each master's view:      .venv/bin/eventbus status -c {_shown(dirs[0])}
Ctrl-C stops everything; state stays under run/cluster until `make clean`.
"""


def main(argv: list[str]) -> int:
    options = _parse(argv)
    client, route, monitor = options.ports
    children = Children()  # before the first node: a stop signal from now on stops everything started
    cluster = NatsCluster(options.directory, NODES,
                          ports=[NodePorts(client + i, route + i, monitor + i) for i in range(NODES)])
    try:
        cluster.start()
        cluster.wait_ready()
        if options.masters:
            print(fleet(children, cluster, options.masters), flush=True)
        else:
            print(instructions(cluster), flush=True)
        return children.watch(cluster.check)
    except Stopped:
        return 0
    except EventBusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop()
        cluster.stop_all()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
