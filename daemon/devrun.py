"""``make run``: start a master, a local minion and the REST API on a config dir, in the foreground.

Prints how to watch the bus; Ctrl-C stops everything.
"""
from __future__ import annotations

import os
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


def _dev_user(api: config.ApiConfig) -> tuple[str, str]:
    """The sample API user of ``conf/api`` and its password, made (random) on the first run."""
    import secrets

    from netapi import auth

    backend = auth.read_external_auth(api.external_auth, api.root_dir, str(api.source))["file"]
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
    master = config.load(config.MasterConfig, config_dir / "master")
    minion = config.load(config.MinionConfig, config_dir / "minion")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start("master", config_dir))
        _wait_bus(procs[-1], master.sock_dir, "master")
        procs.append(_start("minion", config_dir))
        _wait_bus(procs[-1], minion.sock_dir, "minion")
        api_text = ""
        if (config_dir / "api").exists():
            api = config.load(config.ApiConfig, config_dir / "api")
            user, password = _dev_user(api)
            procs.append(_start("api", config_dir))
            token = _api_login(procs[-1], api, user, password)
            scheme = "https" if api.ssl_crt else "http"
            api_text = f"""REST API on {scheme}://{api.host}:{api.port} (user {user!r}, password in
  {api.root_dir / 'etc/eventbus/api-dev-password'}); API token:
  {token}
  stream the bus:          curl -N '{scheme}://{api.host}:{api.port}/events?token={token}'
  live view:               {scheme}://{api.host}:{api.port}/ui
"""
        cli = Path(EVENTBUS).relative_to(Path.cwd()) if Path(EVENTBUS).is_relative_to(Path.cwd()) else EVENTBUS
        conf = config_dir.relative_to(Path.cwd()) if config_dir.is_relative_to(Path.cwd()) else config_dir
        print(f"""
eventbus is running: master on {master.sock_dir}, minion {minion.id!r} on {minion.sock_dir}.
In another terminal:
  watch the master bus:    {cli} watch -c {conf}
  fire onto it:            {cli} fire '{{"message": "It works!"}}' myco/event/success --node master -c {conf}
  accept the minion's key: {cli} key --accept {minion.id} -c {conf}
  relay from the minion:   {cli} send myco/hello who=me -c {conf}
{api_text}Ctrl-C stops everything.
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
