"""``eventbus user add`` and ``eventbus api`` as a user runs them."""
from __future__ import annotations

import os
import stat

from tests.apinode import ApiEnv
from tests.helpers import Daemon, run_cli, wait_for


def test_user_add_writes_a_0600_file_and_replaces_users():
    env = ApiEnv()
    try:
        conf = str(env.config_dir)
        first = run_cli("user", "add", "alice", "--password-stdin", "-c", conf, input="one\n")
        assert first.returncode == 0 and "alice" in first.stdout
        run_cli("user", "add", "alice", "--password-stdin", "-c", conf, input="two\n")
        users = env.root / "users"
        assert stat.S_IMODE(os.stat(users).st_mode) == 0o600
        lines = users.read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("alice:scrypt$")
        assert "one" not in users.read_text() and "two" not in users.read_text()
        # The replaced password is the one that logs in.
        env.start_master()
        env.start_api()
        import requests

        login = lambda pw: requests.post(env.url("/login"), json={"username": "alice", "password": pw,  # noqa: E731
                                                                   "eauth": "file"}, timeout=10).status_code
        assert (login("one"), login("two")) == (401, 200)
    finally:
        env.stop_api()
        env.master.stop()
        env.cleanup()


def test_user_add_refusals_are_one_line():
    env = ApiEnv()
    try:
        conf = str(env.config_dir)
        for args, stdin, words in [(("bad name",), "pw\n", "user name"), (("carol",), "\n", "empty"),
                                   (("carol", "--eauth", "ldap"), "pw\n", "no external_auth backend")]:
            done = run_cli("user", "add", *args, "--password-stdin", "-c", conf, input=stdin)
            assert done.returncode != 0
            assert done.stderr.startswith("error: ") and words in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        env.cleanup()


def test_api_refuses_bad_config_in_one_line():
    for keys, words in [({"no_such_key": 1}, "unknown key 'no_such_key'"),
                        ({"jwt_secret": "short"}, "jwt_secret"),
                        ({"ssl_crt": "missing.crt", "ssl_key": "missing.key"}, "no such file"),
                        ({"external_auth": {"pam": {}}}, "not supported")]:
        env = ApiEnv(**keys)
        try:
            api = Daemon.eventbus("api", env.config_dir).start()
            wait_for(lambda: not api.alive(), timeout=20, what="api to exit")
            api.stop()
            lines = [line for line in api.log.splitlines() if line.strip()]
            assert lines and lines[-1].startswith("error: ") and words in lines[-1], api.log
            assert "Traceback" not in api.log
        finally:
            env.cleanup()


def test_api_says_when_its_port_is_taken():
    import socket

    env = ApiEnv()
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", env.port))
        holder.listen()
        api = Daemon.eventbus("api", env.config_dir).start()
        wait_for(lambda: not api.alive(), timeout=20, what="api to exit")
        assert api.stop() == 1
        assert f"cannot listen on 127.0.0.1:{env.port}" in api.log
    finally:
        holder.close()
        env.cleanup()
