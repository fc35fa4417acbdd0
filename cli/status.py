"""``eventbus status [-c DIR]``: the figures of ``/metrics`` for a person, one ``name: value`` line each.

Asks the running daemons of DIR: the master (``stats``, ``link``; none on a
host whose DIR has only a ``minion`` file), the local minion (each of its
masters, when it has several) and the forwarder when DIR configures them, the reactor when
the master has rules, the master's cluster process when it has ``cluster`` (``cluster: up|down``,
events exported, imported, duplicates dropped, export lag), and the API when DIR has an ``api`` file (its own
figures: streams, requests, CloudEvents counts, from the status file it
keeps; no token needed). A daemon that is not running is one
``NAME: not running (why)`` line; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Iterator

from eventbus.cli import options

TIMEOUT = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_config_dir(parser)


def run(args: argparse.Namespace) -> int:
    from eventbus import config

    master_path = config.config_path(args.config_dir, "master")
    minion_path = config.config_path(args.config_dir, "minion")
    minion_only = (minion_path is not None and minion_path.is_file()
                   and (master_path is None or not master_path.exists()))
    lines: list[tuple[str, Any]] = []
    if not minion_only:  # a minion host has no master config: its own lines only
        master = options.bus_settings(args.config_dir, "master")
        assert isinstance(master, config.MasterConfig)
        lines += _master_lines(master)
    if minion_path is not None and minion_path.is_file():
        lines += _minion_lines(config.load(config.MinionConfig, minion_path))
    api_path = config.config_path(args.config_dir, "api")
    if api_path is not None and api_path.is_file():
        lines += _api_lines(config.load(config.ApiConfig, api_path))
    for name, value in lines:
        print(f"{name}: {value}", flush=True)
    return 1 if any(isinstance(value, str) and value.startswith("not running") for _, value in lines) else 0


def _master_lines(master: Any) -> Iterator[tuple[str, Any]]:
    from eventbus import systemstatus

    forward_dir = systemstatus.forward_sock_dir(master)
    snapshot = systemstatus.gather(master, forward_dir, timeout=TIMEOUT)
    stats, link = snapshot.master, snapshot.link
    if stats is None or link is None:
        yield "master", f"not running ({snapshot.down['master']})"
    else:
        yield "master", f"running (pid {stats['pid']}, up {_duration(stats['uptime'])})"
        yield "master_id", master.id
        yield "events_total", stats.get("events", 0)
        yield "listeners", stats.get("listeners", 0)
        yield "listener_lost_total", stats.get("listener_lost", 0)
        yield "minions_connected", link.get("accepted", 0)
        yield "minions_present", len(link.get("present", []))
        yield "present", ", ".join(sorted(link.get("present", []))) or "none"
        yield "relay_spooled_total", link.get("relayed", 0)
        yield "relay_throttled_total", link.get("throttled", 0)
        yield "journal_bytes", snapshot.journal_bytes
    if forward_dir is not None:
        if snapshot.brokers is None:
            yield "forward", f"not running ({snapshot.down['forward']})"
        else:
            yield "forward", "running"
            for broker in snapshot.brokers:
                yield (f"forward.{broker.name}", f"{broker.type} {broker.state} delivered={broker.delivered} "
                                                 f"pending={broker.pending} dropped={broker.dropped}")
    if master.reactor:
        reactor = snapshot.reactor
        if reactor is None:
            yield "reactor", f"not running ({snapshot.down['reactor']})"
        else:
            yield "reactor", f"running (pid {reactor['pid']}, {reactor['rules']} rules)"
            for key in ("in_flight", "done", "failed", "lost"):
                yield f"reactor_{key}", reactor.get(key, 0)
    if master.cluster is not None:
        yield from _cluster_lines(snapshot.cluster, snapshot.down.get("cluster", ""))


def _cluster_lines(status: dict | None, why_down: str) -> Iterator[tuple[str, Any]]:
    """The master's part of the fleet-wide bus (SPEC 12), from its cluster process's status file."""
    if status is None:
        yield "cluster", f"not running ({why_down})"
        return
    state = status.get("state")
    if state == "up":
        yield "cluster", "up"
    else:
        error = status.get("error")
        yield "cluster", f"down ({error})" if error else "down"
    for key in ("exported", "imported", "duplicates", "export_lag"):
        yield f"cluster_{key}", status.get(key, 0)


def _minion_lines(minion: Any) -> Iterator[tuple[str, Any]]:
    from eventbus.bus import control, wire
    from eventbus.errors import EventBusError

    try:
        link = control.request(minion.sock_dir, wire.VERB_LINK, None, TIMEOUT)
    except EventBusError as exc:
        yield "minion", f"not running ({exc})"
        return
    yield "minion", f"running (id {minion.id}, link {link['state']})"
    yield "minion_spooled", link.get("spooled", 0)
    yield "minion_spool_dropped", link.get("dropped", 0)
    masters = link.get("masters", [])
    if len(masters) > 1:
        yield "minion_master_type", link.get("master_type", "str")
        for master in masters:
            role = "live" if master["live"] else ("watched" if master["linked"] else "standby")
            yield f"minion_master.{master['master']}", f"{role} {master['state']} pending={master['pending']}"


def _api_lines(api: Any) -> Iterator[tuple[str, Any]]:
    """The API's own figures from the status file it keeps under its root_dir (no token needed)."""
    from eventbus import systemstatus

    path = systemstatus.api_status_path(api)
    try:
        status = systemstatus.read_api(api)
    except PermissionError:
        yield "api", f"unknown (cannot read {path}: run this as the API's user)"
        return
    if status is None:
        yield "api", f"not running (no live status file at {path})"
        return
    up = _duration(time.time() - float(status.get("started", time.time())))
    yield "api", f"running (pid {status['pid']}, up {up}) on {status.get('url', '?')}"
    yield "api_requests_total", status.get("requests", 0)
    for name, labels, value in status.get("samples", []):
        label = "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""
        yield f"{name.removeprefix('eventbus_')}{label}", int(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
