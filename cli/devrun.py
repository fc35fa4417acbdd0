"""``make run``: start a master, a local minion and the REST API on a config dir, in the foreground.

Prints how to watch the bus. Ctrl-C, SIGTERM (a supervisor, ``timeout``) and
SIGHUP (a closed terminal) all stop every daemon it started before it exits,
so none is left holding the ports and sock_dirs. It lives in ``cli`` because
it drives both the daemons and the REST API (``daemon`` may not import ``netapi``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from eventbus import config
from eventbus.bus import control
from eventbus.forwarding import config as forwardconf
from eventbus.errors import BusUnavailableError, EventBusError

EVENTBUS = str(Path(sys.executable).parent / "eventbus")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal arrived; the runner stops its daemons and exits 0, as on Ctrl-C."""


class Children:
    """The daemons the runner started; a stop signal raises ``Stopped``, never between a start and its record."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self._starting = False
        self._pending: int | None = None
        for each in STOP_SIGNALS:
            # Under nohup SIGHUP is ignored on purpose: keep it so.
            if signal.getsignal(each) is not signal.SIG_IGN:
                signal.signal(each, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only the first signal counts: later ones must not cut the shutdown short.
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        if self._starting:
            self._pending = signum
            return
        raise Stopped(signal.Signals(signum).name)

    def start(self, command: str, config_dir: Path) -> subprocess.Popen:
        """Start ``eventbus COMMAND -c DIR``, recorded before any stop signal is acted on."""
        self._starting = True
        try:
            self.procs.append(subprocess.Popen([EVENTBUS, command, "-c", str(config_dir)]))
        finally:
            self._starting = False
        if self._pending is not None:
            raise Stopped(signal.Signals(self._pending).name)
        return self.procs[-1]

    def watch(self, check: Callable[[], None] = lambda: None) -> int:
        """Until a daemon exits (or a stop signal), ``check`` every half second; 1: one exited on its own."""
        while all(proc.poll() is None for proc in self.procs):
            check()
            time.sleep(0.5)
        return 1

    def stop(self) -> None:
        """SIGTERM each live daemon, newest first; wait for all (kill one that hangs)."""
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def _dev_user(api: config.ApiConfig) -> tuple[str, str]:
    """The sample API user of ``conf/api`` and its password, made (random) on the first run."""
    import secrets

    from eventbus.netapi import auth

    backend = api.external_auth["file"]
    user = next(iter(backend.perms))
    remembered = api.root_dir / "etc/eventbus/api-dev-password"
    password = remembered.read_text().strip() if remembered.exists() else ""
    if not password or user not in auth.read_users(backend.users_file):
        password = secrets.token_urlsafe(12)
        auth.write_user(backend.users_file, user, password)
        remembered.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(remembered, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
    return user, password


def _api_login(proc: subprocess.Popen, api: config.ApiConfig, user: str, password: str,
               timeout: float = 15.0) -> str:
    """Wait for the API to answer, log in as ``user`` and return the token."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    scheme = "https" if api.ssl_crt else "http"
    body = json.dumps({"username": user, "password": password, "eauth": "file"}).encode()
    request = urllib.request.Request(f"{scheme}://{api.host}:{api.port}/login", data=body,
                                     headers={"Content-Type": "application/json"})
    context = ssl._create_unverified_context() if scheme == "https" else None  # a dev certificate
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise EventBusError(f"the REST API exited with code {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                return json.load(answer)["return"][0]["token"]
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise EventBusError(f"the REST API did not answer within {timeout:g} s") from None
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    config_dir = Path(argv[0] if argv else "conf").resolve()
    try:
        master = config.load(config.MasterConfig, config_dir / "master")
        minion = config.load(config.MinionConfig, config_dir / "minion")
    except EventBusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    children = Children()
    try:
        _wait_bus(children.start("master", config_dir), master.sock_dir, "master")
        _wait_bus(children.start("minion", config_dir), minion.sock_dir, "minion")
        forward = None
        if (config_dir / "forward").exists():
            forward = forwardconf.load(config_dir / "forward")
            _wait_bus(children.start("forward", config_dir), forward.sock_dir, "forwarder")
        api_text = ""
        if (config_dir / "api").exists():
            api = config.load(config.ApiConfig, config_dir / "api")
            user, password = _dev_user(api)
            token = _api_login(children.start("api", config_dir), api, user, password)
            scheme = "https" if api.ssl_crt else "http"
            api_text = f"""REST API on {scheme}://{api.host}:{api.port} (user {user!r}, password in
  {api.root_dir / 'etc/eventbus/api-dev-password'}); API token:
  {token}
  stream the bus:          curl -N '{scheme}://{api.host}:{api.port}/events?token={token}'
  live view:               {scheme}://{api.host}:{api.port}/ui?token={token}
"""
        cli = Path(EVENTBUS).relative_to(Path.cwd()) if Path(EVENTBUS).is_relative_to(Path.cwd()) else EVENTBUS
        conf = config_dir.relative_to(Path.cwd()) if config_dir.is_relative_to(Path.cwd()) else config_dir
        forward_text = "" if forward is None else f"""  forwarders' health:      {cli} forward --status -c {conf}
  (brokers: {', '.join(f"{b.name} ({b.type})" for b in forward.brokers)})
"""
        print(f"""
eventbus is running: master on {master.sock_dir}, minion {minion.id!r} on {minion.sock_dir}.
In another terminal:
  watch the master bus:    {cli} watch -c {conf}
  fire onto it:            {cli} fire '{{"message": "It works!"}}' myco/event/success --node master -c {conf}
  accept the minion's key: {cli} key --accept {minion.id} -c {conf}
  relay from the minion:   {cli} send myco/hello who=me -c {conf}
  every daemon's figures:  {cli} status -c {conf}
{forward_text}{api_text}Ctrl-C stops everything.
""", flush=True)
        return children.watch()
    except Stopped:
        return 0
    except EventBusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
