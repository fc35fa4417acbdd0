"""Test support for the REST API: a real master and a real ``eventbus api`` on one short temp dir."""
from __future__ import annotations

import contextlib
import shutil
from typing import Any, Iterator

import requests

from tests.helpers import Daemon, Node, free_port, run_cli, short_tmpdir, wait_for, write_config

PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}
JWT_SECRET = "test-jwt-secret-0123456789-abcdefghijklmnopq"


class ApiEnv:
    """A master daemon plus an API config (users alice: '*', bob: 'myco/*') in one temp dir."""

    def __init__(self, master_keys: dict | None = None, **api_keys: Any) -> None:
        self.root = short_tmpdir("eba")
        self.master = Node(self.root, "master", **(master_keys or {}))
        self.config_dir = self.master.config_dir
        self.port = free_port()
        keys: dict[str, Any] = {
            "root_dir": str(self.root), "port": self.port, "log_level": "info", "master_config": "master",
            "jwt_secret": JWT_SECRET,
            "external_auth": {"file": {"users_file": "users", "alice": ["*"], "bob": ["myco/*"]}},
        }
        keys.update(api_keys)
        self.keys = keys
        write_config(self.config_dir, "api", **keys)
        self.api: Daemon | None = None
        self.scheme = "https" if "ssl_crt" in keys else "http"

    @property
    def verify(self) -> str | bool:
        """What requests should trust: the test's self-signed certificate under HTTPS."""
        return str(self.root / self.keys["ssl_crt"]) if "ssl_crt" in self.keys else True

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add_user(self, name: str, password: str) -> None:
        done = run_cli("user", "add", name, "--password-stdin", "-c", str(self.config_dir), input=password + "\n")
        assert done.returncode == 0, done.stderr

    def start_master(self) -> None:
        self.master.start()

    def start_api(self, timeout: float = 15.0) -> Daemon:
        self.api = Daemon.eventbus("api", self.config_dir).start()

        def answers() -> bool:
            if not self.api.alive():
                raise AssertionError(f"api exited with {self.api.proc.returncode}:\n{self.api.log}")
            try:
                return requests.get(self.url("/"), timeout=1, verify=self.verify).status_code == 200
            except requests.RequestException:
                return False
        wait_for(answers, timeout, interval=0.05, what="the API to answer")
        return self.api

    def stop_api(self) -> int | None:
        code = self.api.stop() if self.api is not None else None
        self.api = None
        return code

    def login(self, user: str = "alice", password: str | None = None) -> str:
        answer = requests.post(self.url("/login"), json={"username": user, "password": password or PASSWORDS[user],
                                                          "eauth": "file"}, timeout=10, verify=self.verify)
        assert answer.status_code == 200, answer.text
        return answer.json()["return"][0]["token"]

    def fire(self, data: dict, tag: str) -> None:
        from eventbus import event

        with event.get_event("master", opts=self.master.opts(), listen=False) as bus:
            assert bus.fire_event(data, tag, timeout=3000)

    def cleanup(self) -> None:
        for daemon in (self.api, self.master.daemon):
            if daemon is not None and daemon.alive():
                daemon.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_api(master_keys: dict | None = None, **api_keys: Any) -> Iterator[ApiEnv]:
    """A running master and API with users alice (sees all) and bob (myco/*); stopped and removed after."""
    env = ApiEnv(master_keys, **api_keys)
    try:
        for name, password in PASSWORDS.items():
            env.add_user(name, password)
        env.start_master()
        env.start_api()
        yield env
    except BaseException:
        # pytest shows what a failed test printed: the daemons' own account of what happened.
        for name, daemon in (("api", env.api), ("master", env.master.daemon)):
            if daemon is not None:
                print(f"--- the {name}'s log (end) ---\n{daemon.log[-6000:]}")
        raise
    finally:
        env.stop_api()
        env.master.stop()
        env.cleanup()
