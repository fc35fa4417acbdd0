"""Each daemon started once with every key of its file set to a non-default valid value, and each value seen
to take effect where a user would see it (issue 19: a documented key the daemon refuses or ignores).
The forwarder's are in test_every_key_forward.py.

The keys come from the declarations (``eventbus.configdoc.keys_of``): ``test_every_declared_key_has_a_value_here``
fails for a key with no value below, and each daemon test ends with ``Seen.done()``, which fails for a key whose
effect it did not check. A key whose effect cannot be seen cheaply is checked in the opts dict the config reader
makes, with a comment saying why.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import msgpack
import pytest
import requests
import zmq

from bench.procs import link_state, wait_link
from eventbus import config, configdoc, event, keys, masters, systemstatus
from eventbus.bus import control, wire
from tests.helpers import Daemon, Node, free_port, run_cli, short_tmpdir, wait_for, write_config

MIB = 1 << 20
OTHER_HOST = "127.0.0.2"  # loopback, but not the default 127.0.0.1: where a daemon listens shows it was read
REACTION = [{"keys/react": [{"fire": {"tag": "keys/reacted", "data": {"by": "the reactor"}}}]}]
# The machine's own NATS server (JetStream on 4222), a stream and subjects of this run's own.
RUN = f"{os.getpid()}_{int(time.time())}"
CLUSTER = {"servers": ["nats://127.0.0.1:4222"], "stream": f"KEYS_{RUN}", "replicas": 1,
           "subject_prefix": f"keys_{RUN}"}


def master_keys(publish_port: int, ret_port: int) -> dict[str, Any]:
    """Every ``master`` key, none at its default (``event_journal``: see the API test's master)."""
    return {
        "root_dir": "root", "sock_dir": "s", "pki_dir": "pki", "cachedir": "cache", "journal_dir": "jrn",
        "log_file": "logs/master.log", "log_level": "info", "interface": OTHER_HOST,
        "publish_port": publish_port, "ret_port": ret_port, "max_event_size": 200_000,
        "event_match_type": "fnmatch", "auto_accept": True, "presence_events": True, "loop_interval": 0.3,
        "heartbeat_interval": 2.0, "subscriber_queue": 1000, "event_window": 40, "event_window_bytes": 300_000,
        "event_journal": True, "journal_max_bytes": 16 * MIB, "journal_max_age": 1.0, "journal_fsync": "always",
        "reactor": REACTION, "relay_rate_limit": 1, "id": "keys-master", "cluster": CLUSTER,
    }


def minion_keys(publish_port: int, ret_port: int, master_pubkey: str) -> dict[str, Any]:
    return {
        "root_dir": "root", "sock_dir": "s", "pki_dir": "pki", "cachedir": "cache", "log_file": "logs/minion.log",
        "log_level": "info", "id": "keys-minion", "master": OTHER_HOST, "master_pubkey": master_pubkey,
        "publish_port": publish_port, "ret_port": ret_port, "max_event_size": 100_000, "event_match_type": "regex",
        "heartbeat_interval": 0.25, "subscriber_queue": 2000, "event_window": 20, "event_window_bytes": 150_000,
        "spool_max_events": 10, "master_type": "failover", "master_alive_interval": 0.6, "master_failback": True,
    }


def api_keys(port: int, master_config: str) -> dict[str, Any]:
    return {
        "root_dir": "root", "host": OTHER_HOST, "port": port, "ssl_crt": "tls/api.crt", "ssl_key": "tls/api.key",
        "master_config": master_config, "log_file": "logs/api.log", "log_level": "info",
        "external_auth": {"file": {"users_file": "people", "carol": ["keys/*"]}}, "token_expire": 1234.5,
        "jwt_secret": "every-key-jwt-secret-0123456789-abcdef", "webhook_disable_auth": True, "events_replay": 77,
        "cors_origin": "https://dash.example.com", "stream_limit": 1, "stream_queue": 100, "login_rate": 1,
        "metrics_public": True, "max_event_size": 4096, "event_match_type": "endswith",
    }


class Seen:
    """The keys of one file whose effect a test checked; ``done`` fails naming every declared key it did not."""

    def __init__(self, file: str, extra: tuple[str, ...] = ()) -> None:
        self.file = file
        self.declared = set(configdoc.keys_of(file)) | set(extra)
        self.keys: set[str] = set()

    def __call__(self, *keys: str) -> None:
        assert set(keys) <= self.declared, f"{set(keys) - self.declared} are not keys of {self.file}"
        self.keys.update(keys)

    def done(self) -> None:
        assert self.keys == self.declared, f"{self.file} keys set but not checked: {sorted(self.declared - self.keys)}"


def at_default(file: str, values: dict[str, Any]) -> list[str]:
    """The keys ``values`` gives their declared default."""
    defaults = {spec.name: spec.default for spec in dataclasses.fields(configdoc.FILES[file])}
    return sorted(key for key, value in values.items() if key in defaults and value == defaults[key])


def stream_subjects(stream: str) -> list[str]:
    """The subjects of a stream of the machine's NATS server (made by the master's cluster process)."""
    import asyncio

    import nats

    async def ask() -> list[str]:
        client = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = client.jetstream()
            for _ in range(100):
                try:
                    return list((await js.stream_info(stream)).config.subjects or [])
                except nats.js.errors.NotFoundError:
                    await asyncio.sleep(0.2)
            return []
        finally:
            await client.close()
    return asyncio.run(ask())


def delete_stream(stream: str) -> None:
    """Leave the machine's NATS server as it was."""
    import asyncio

    import nats

    async def delete() -> None:
        client = await nats.connect("nats://127.0.0.1:4222")
        try:
            await client.jetstream().delete_stream(stream)
            await client.jetstream().delete_key_value(f"{stream}_ids")
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await client.close()
    asyncio.run(delete())


def test_every_declared_key_has_a_value_here():
    for file, values in (("master", master_keys(1, 2)), ("minion", minion_keys(1, 2, "k")), ("api", api_keys(1, "m"))):
        declared = set(configdoc.keys_of(file))
        assert set(values) == declared, f"{file}: {sorted(set(values) ^ declared)}"
        assert at_default(file, values) == (["event_journal"] if file == "master" else []), file


def logged(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


def refused_by_size(sock_dir: Path, limit: int) -> None:
    """Push a frame just over ``limit`` straight into the daemon (no client-side check)."""
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(f"ipc://{sock_dir}/pull.ipc")
        push.send(b"keys/big\x00" + msgpack.packb({"blob": "x" * (limit + 500)}))
        push.close()
    finally:
        context.term()


def listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def stats(node: Node) -> dict:
    return control.request(node.sock_dir, wire.VERB_STATS, timeout=5)


def test_master_and_minion_with_every_key_set():
    publish_port, ret_port = free_port(), free_port()
    m_root, n_root = short_tmpdir("ebkm"), short_tmpdir("ebkn")
    pubkey, _ = keys.key_pair(m_root / "conf" / "root" / "pki", "master")
    master = Node(m_root, "master", **master_keys(publish_port, ret_port))
    minion = Node(n_root, "minion", **minion_keys(publish_port, ret_port, pubkey.decode()))
    m_home, n_home = master.config_dir / "root", minion.config_dir / "root"
    m_log, n_log = m_home / "logs/master.log", n_home / "logs/minion.log"
    seen_master, seen_minion = Seen("master"), Seen("minion")
    try:
        # The minion first, its master away: what it relays waits in a spool of 10.
        minion.start()
        seen_minion("root_dir", "sock_dir")
        assert minion.sock_dir == n_home / "s" and (n_home / "s/pub.ipc").exists()
        wait_for(lambda: logged(n_log, "minion bus ready"), what="the minion's lines in its log_file")
        assert "minion bus ready" not in minion.daemon.log, "log_file, not stderr"
        assert "[INFO]" in n_log.read_text()
        seen_minion("log_file", "log_level")
        with event.MinionEvent(opts=minion.opts(), listen=False) as relay:
            for n in range(25):
                assert relay.fire_master({"n": n}, f"keys/relayed/{n}") is True
        state = wait_for(lambda: (s := link_state(minion))["dropped"] == 15 and s, what="15 of 25 dropped")
        assert state["spooled"] == 10 and (n_home / "cache/spool").exists()
        seen_minion("spool_max_events", "cachedir")
        assert control.request(minion.sock_dir, wire.VERB_STATS)["window_size"] == 20
        seen_minion("event_window")
        with event.get_event("minion", opts=minion.opts()) as local:
            local.fire_event({"n": 1}, "keys/local/1")
            assert local.get_event(wait=5, tag=r"keys/local/\d+")["n"] == 1, "a regex, the minion's match type"
            seen_minion("event_match_type")
            for n in range(3):
                local.fire_event({"blob": "y" * 60_000}, "keys/local/big")
            wait_for(lambda: stats(minion)["window"] <= 2, what="the window bounded by event_window_bytes")
            seen_minion("event_window_bytes")
        refused_by_size(minion.sock_dir, 100_000)
        wait_for(lambda: logged(n_log, "over max_event_size of 100000 bytes"), what="the minion's refusal")
        seen_minion("max_event_size")

        master.start()
        seen_master("root_dir", "sock_dir")
        assert master.sock_dir == m_home / "s" and (m_home / "s/pub.ipc").exists()
        assert (m_home / "pki/master.key").exists()
        seen_master("pki_dir")
        wait_for(lambda: logged(m_log, "master bus ready"), what="the master's lines in its log_file")
        assert "master bus ready" not in master.daemon.log and "[INFO]" in m_log.read_text()
        seen_master("log_file", "log_level")
        assert listens(OTHER_HOST, publish_port) and listens(OTHER_HOST, ret_port)
        assert not listens("127.0.0.1", ret_port), "bound to interface only"
        seen_master("interface", "publish_port", "ret_port")

        # The minion finds its master at 127.0.0.2 on those ports, with the key it was given; no operator.
        wait_link(minion, "accept", timeout=15)
        seen_master("auto_accept")
        seen_minion("master", "publish_port", "ret_port", "id", "master_pubkey")
        assert not (n_home / "pki" / masters.PINNED_ONE).exists() and "pinned" not in n_log.read_text()
        assert (n_home / "pki/minion.key").exists()
        seen_minion("pki_dir")
        with event.get_event("master", opts=master.opts()) as bus:
            bus.start_following(0)
            relayed = []
            while len(relayed) < 10:
                record = bus.get_event_record(wait=10, tag="keys/relayed/*", following=True)
                assert record is not None, f"{len(relayed)} of the 10 spooled events"
                relayed.append(record.data)
            assert [r["data"]["n"] for r in relayed] == list(range(15, 25))
            assert {r["id"] for r in relayed} == {"keys-minion"}
            seen_master("event_match_type")  # a glob matched: fnmatch, not the default startswith
        # One event a second (2 at once): the 10 spooled ones went into debt, so the next batch is refused.
        with event.MinionEvent(opts=minion.opts(), listen=False) as relay:
            assert relay.fire_master({"n": 25}, "keys/relayed/25") is True
        wait_for(lambda: link_state(master)["throttled"] > 0, what="a batch refused over relay_rate_limit")
        wait_for(lambda: logged(m_log, "over its relay budget of 1 events/s"), what="the master's budget line")
        seen_master("relay_rate_limit")
        assert (m_home / "cache/relay").exists()
        seen_master("cachedir")
        with event.get_event("master", opts=master.opts()) as bus:
            present = bus.get_event(wait=5, tag="salt/presence/present")
            assert present is not None and "keys-minion" in present["present"], "every 0.3 s, not every 60"
            seen_master("presence_events", "loop_interval")

            # With ``cluster`` the reactor reacts to the fleet stream (the master's events go there first).
            wait_for(lambda: logged(m_log, "reacting to the fleet's events"), timeout=30,
                     what="the reactor's lines in log_file")
            bus.fire_event({}, "keys/react")
            reacted = bus.get_event(wait=30, tag="keys/reacted")
            assert reacted is not None and reacted["by"] == "the reactor"
            assert (m_home / "cache/reactor").exists()
            seen_master("reactor")

            for n in range(60):
                bus.fire_event({"n": n}, "keys/small")
            wait_for(lambda: stats(master)["window"] == 40, what="a window of event_window events")
            assert stats(master)["window_size"] == 40
            seen_master("event_window")
            for _ in range(4):
                bus.fire_event({"blob": "x" * 100_000}, "keys/big")
            wait_for(lambda: stats(master)["window"] < 40, what="the window bounded by event_window_bytes")
            seen_master("event_window_bytes")
        refused_by_size(master.sock_dir, 200_000)
        wait_for(lambda: logged(m_log, "over max_event_size of 200000 bytes"), what="the master's refusal")
        seen_master("max_event_size")

        # The journal: 1 MiB segments (journal_max_bytes / 16), each dropped 1 s after its newest event.
        first = stats(master)["journal"]["first_seq"]
        with event.get_event("master", opts=master.opts(), listen=False) as bus:
            for _ in range(12):
                bus.fire_event({"blob": "z" * 100_000}, "keys/journal")
        # (the first may already be gone by age: either way it was finished at 1 MiB, not at the default 16)
        wait_for(lambda: (j := stats(master)["journal"])["segments"] >= 2 or j["first_seq"] > first,
                 what="a second 1 MiB segment")
        assert any(name.endswith(".jnl") for name in os.listdir(m_home / "jrn"))
        seen_master("event_journal", "journal_dir", "journal_max_bytes")
        wait_for(lambda: stats(master)["journal"]["first_seq"] > first, timeout=15,
                 what="the oldest segment dropped past journal_max_age")
        seen_master("journal_max_age")
        # Seen only as what a machine crash loses, and in what the daemon reads from the file:
        assert config.master_config(master.path)["journal_fsync"] == "always"
        assert config.master_config(master.path)["subscriber_queue"] == 1000
        assert config.minion_config(minion.path)["subscriber_queue"] == 2000
        seen_master("journal_fsync", "subscriber_queue")
        seen_minion("subscriber_queue")

        # Heartbeats, seen as deadlines halfway between the configured and the default timings: a frozen
        # minion leaves within 1.5 master intervals (3 s; the default would take 7.5) ...
        minion.daemon.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: "keys-minion" not in link_state(master)["present"], timeout=5.5,
                     what="the frozen minion to leave the present set")
        finally:
            minion.daemon.signal(signal.SIGCONT)
        seen_master("heartbeat_interval")
        wait_link(minion, "accept", timeout=15)
        # ... and the minion gives up on a frozen master after 2 of its own intervals + 0.5 s (1 s; with the
        # master's 2 s intervals it would take 4.5).
        master.daemon.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: logged(n_log, "has not answered for"), timeout=3,
                     what="the minion to give up on its frozen master")
        finally:
            master.daemon.signal(signal.SIGCONT)
        seen_minion("heartbeat_interval")
        status = run_cli("status", "-c", str(master.config_dir))
        assert "master_id: keys-master" in status.stdout.splitlines(), status.stdout
        seen_master("id")
        assert stream_subjects(CLUSTER["stream"]) == [f"{CLUSTER['subject_prefix']}.>"]
        wait_for(lambda: (systemstatus.read_cluster(config.load(config.MasterConfig, master.path)) or {})
                 .get("exported", 0) > 0, timeout=30, what="the master's events on its cluster stream")
        seen_master("cluster")
        assert link_state(minion)["master_type"] == "failover"
        seen_minion("master_type")
        # With one master there is none to fail over to or back from: both are read here, and act with a list of
        # masters (tests/integration/test_several_masters_failover.py).
        assert config.minion_config(minion.path)["master_alive_interval"] == 0.6
        assert config.minion_config(minion.path)["master_failback"] is True
        seen_minion("master_alive_interval", "master_failback")
        seen_master.done()
        seen_minion.done()
    except BaseException:
        for node, log in ((master, m_log), (minion, n_log)):
            print(f"--- {node.name} log_file (end) ---\n{log.read_text()[-4000:] if log.exists() else ''}")
            print(f"--- {node.name} stderr ---\n{node.daemon.log[-2000:] if node.daemon else ''}")
        raise
    finally:
        minion.stop()
        master.stop()
        minion.cleanup()
        master.cleanup()
        delete_stream(CLUSTER["stream"])


# -- the REST API --------------------------------------------------------------------------------------------


def self_signed(crt: Path, key: Path, host: str) -> None:
    crt.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout",
                           str(key), "-out", str(crt), "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr


def test_api_with_every_key_set():
    root = short_tmpdir("ebka")
    master = Node(root, "master", event_journal=False)  # the one master key the master test leaves on
    api_conf, port = root / "apiconf", free_port()
    api_path = write_config(api_conf, "api", **api_keys(port, "../conf/master"))
    home = api_conf / "root"
    api_log, crt = home / "logs/api.log", home / "tls/api.crt"
    base = f"https://{OTHER_HOST}:{port}"
    seen, seen_master = Seen("api"), Seen("master")
    api = None
    try:
        self_signed(crt, home / "tls/api.key", OTHER_HOST)
        added = run_cli("user", "add", "carol", "--password-stdin", "-c", str(api_conf), input="carol-secret-pw\n")
        assert added.returncode == 0, added.stderr
        assert (home / "people").exists()
        master.start()
        assert "journal" not in stats(master) and not (root / "var/cache/eventbus/master/journal").exists()
        seen_master("event_journal")
        api = Daemon.eventbus("api", api_conf).start()

        def answers() -> bool:
            api.check_alive()
            try:
                return requests.get(base + "/", timeout=2, verify=str(crt)).status_code == 200
            except requests.RequestException:
                return False
        wait_for(answers, 20, interval=0.05, what="the API over HTTPS on 127.0.0.2")
        assert not listens("127.0.0.1", port)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://{OTHER_HOST}:{port}/", timeout=5)
        seen("host", "port", "ssl_crt", "ssl_key")
        wait_for(lambda: logged(api_log, "REST API ready"), what="the API's lines in its log_file")
        assert "REST API ready" not in api.log and "[INFO]" in api_log.read_text()
        seen("log_file", "log_level", "root_dir")

        login = requests.post(base + "/login", json={"username": "carol", "password": "carol-secret-pw",
                                                     "eauth": "file"}, timeout=10, verify=str(crt))
        assert login.status_code == 200, login.text
        session = login.json()["return"][0]
        assert session["perms"] == ["keys/*"] and session["expire"] - session["start"] == pytest.approx(1234.5)
        seen("external_auth", "token_expire")
        wrong = [requests.post(base + "/login", json={"username": "carol", "password": "nope", "eauth": "file"},
                               timeout=10, verify=str(crt)).status_code for _ in range(2)]
        assert wrong == [401, 429], "one failed login a minute"
        seen("login_rate")
        cors = requests.get(base + "/", headers={"Origin": "https://dash.example.com"}, timeout=10, verify=str(crt))
        assert cors.headers.get("Access-Control-Allow-Origin") == "https://dash.example.com"
        seen("cors_origin")
        assert requests.get(base + "/metrics", timeout=10, verify=str(crt)).status_code == 200, "no token"
        seen("metrics_public")

        bearer = jwt.encode({"user": {"username": "ops", "role": "admin"}, "exp": int(time.time()) + 600},
                            "every-key-jwt-secret-0123456789-abcdef", algorithm="HS256")
        stream = requests.get(base + "/events", headers={"Authorization": f"Bearer {bearer}"}, stream=True,
                              timeout=10, verify=str(crt))
        assert stream.status_code == 200
        seen("jwt_secret")
        second = requests.get(base + "/events", params={"token": session["token"]}, timeout=10, verify=str(crt))
        assert second.status_code == 503
        seen("stream_limit")
        with event.get_event("master", opts=master.opts()) as bus:
            hooked = requests.post(base + "/hook/keys/open", json={"x": 1}, timeout=10, verify=str(crt))
            assert hooked.status_code == 200, "no credentials needed"
            assert bus.get_event(wait=5, tag="salt/netapi/hook/keys/open")["body"] == {"x": 1}
        seen("webhook_disable_auth", "master_config")
        big = requests.post(base + "/hook/keys/big", data=b"x" * 5000, timeout=10, verify=str(crt))
        assert big.status_code == 413
        seen("max_event_size")

        # The open stream, never read from here on, is dropped once 100 events wait for it (and the socket
        # buffers are full: a few MB).
        try:
            with event.get_event("master", opts=master.opts(), listen=False) as bus:
                for n in range(3000):
                    assert bus.fire_event({"n": n, "pad": "p" * 4000}, "keys/flood", timeout=3000)
                    if n % 100 == 99 and logged(api_log, "dropped the stream of ops"):
                        break
            wait_for(lambda: logged(api_log, "dropped the stream of ops"), 20, what="the stalled stream dropped")
        finally:
            stream.close()
        seen("stream_queue")
        # Kept for compatibility (a resume reaches into the journal), and no handle of the API takes its
        # match type from this file: both are only what the reader made of them.
        assert config.api_config(api_path)["events_replay"] == 77
        assert config.api_config(api_path)["event_match_type"] == "endswith"
        seen("events_replay", "event_match_type")
        seen.done()
    except BaseException:
        print(f"--- api log_file (end) ---\n{api_log.read_text()[-4000:] if api_log.exists() else ''}")
        print(f"--- api stderr ---\n{api.log[-2000:] if api else ''}")
        raise
    finally:
        if api is not None:
            api.stop()
        master.stop()
        master.cleanup()
