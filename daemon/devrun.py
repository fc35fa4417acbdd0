"""``make run``: start a master, a local minion (and the REST API) on a config dir, in the foreground.

Prints how to watch the bus; Ctrl-C stops everything.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from eventbus import config, control
from eventbus.errors import BusUnavailableError, EventBusError

EVENTBUS = str(Path(sys.executable).parent / "eventbus")


def _start(command: str, config_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([EVENTBUS, command, "-c", str(config_dir)])


def _wait_bus(proc: subprocess.Popen, sock_dir: Path, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise EventBusError(f"the {what} exited with code {proc.returncode}; see its log above")
        try:
            control.ping(sock_dir, timeout=0.5)
            return
        except BusUnavailableError:
            if time.monotonic() > deadline:
                raise EventBusError(f"the {what} did not come up within {timeout:g} s") from None
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    config_dir = Path(argv[0] if argv else "conf").resolve()
    master = config.load(config.MasterConfig, config_dir / "master")
    minion = config.load(config.MinionConfig, config_dir / "minion")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start("master", config_dir))
        _wait_bus(procs[-1], master.sock_dir, "master")
        procs.append(_start("minion", config_dir))
        _wait_bus(procs[-1], minion.sock_dir, "minion")
        cli = Path(EVENTBUS).relative_to(Path.cwd()) if Path(EVENTBUS).is_relative_to(Path.cwd()) else EVENTBUS
        conf = config_dir.relative_to(Path.cwd()) if config_dir.is_relative_to(Path.cwd()) else config_dir
        print(f"""
eventbus is running: master on {master.sock_dir}, minion {minion.id!r} on {minion.sock_dir}.
In another terminal:
  watch the master bus:    {cli} watch -c {conf}
  fire onto it:            {cli} fire '{{"message": "It works!"}}' myco/event/success --node master -c {conf}
  accept the minion's key: {cli} key --accept {minion.id} -c {conf}
  relay from the minion:   {cli} send myco/hello who=me -c {conf}
Ctrl-C stops everything.
""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    except EventBusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
