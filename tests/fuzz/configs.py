"""Every config file's loader on arbitrary YAML: master, minion, api (with its users file), forward.

The input is the file's bytes (for ``config_api``, a second message is the
users file's). A loader may refuse a file only with ``ConfigError`` (one
line naming file and key); what it accepts must be usable: paths without a
NUL byte, finite positive seconds, and a dict the Salt-style accessors
(``to_dict``) can give back. A refusal must come fast whatever the file
(a YAML alias bomb is small on disk and huge once printed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from pathlib import Path
from typing import Iterator

import yaml

from eventbus import config
from eventbus.forwarding import config as forwardconf
from eventbus.config import ApiConfig, MasterConfig, MinionConfig
from eventbus.netapi import auth
from tests.fuzz import core

REPO_CONF = core.REPO / "conf"
CONFIG_WORDS = (b"root_dir: ", b"sock_dir: ", b"pki_dir: ", b"id: ", b"master: ", b"master_type: ", b"- host: ",
                b"ret_port: ", b"master_failback: ", b"master_alive_interval: ", b"port: ", b"heartbeat_interval: ",
                b"max_event_size: ", b"reactor:\n  - 'a/*':\n      - fire: {tag: x, data: {}}\n", b"external_auth:",
                b"users_file: ", b"brokers:\n  - name: a\n    type: file\n", b"event_broker:", b"type: ", b"tags: ",
                b"_file: ", b"_env: ", b".nan", b".inf", b"-.inf", b"~", b"&a ", b"*a", b"!!binary ", b"!!python/",
                b"? ", b"[", b"{", b"\x00", b"\\0", b"\xff", b"'", b'"', b"\n  ", b"- ", b"0x", b"1e400")


class NoNewImports:
    """A ``sys.meta_path`` finder refusing every module not imported yet (a config may name a sink class:
    the fuzzer must not import random modules, some of which act on import)."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201  (the finder protocol)
        raise ImportError(f"the fuzz harness imports no new module ({name})")


@contextlib.contextmanager
def no_new_imports() -> Iterator[None]:
    finder = NoNewImports()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def check_loaded(loaded: object, what: str) -> None:
    """A config a loader accepted must be usable: no NUL in a path, finite seconds, a Salt-style dict."""
    if isinstance(loaded, Exception):
        return
    for spec in dataclasses.fields(loaded):  # type: ignore[arg-type]
        value = getattr(loaded, spec.name)
        if isinstance(value, Path) and "\x00" in str(value):
            raise core.Finding(f"{what} accepted key {spec.name!r} with a NUL byte in its path: {str(value)[:80]!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise core.Finding(f"{what} accepted key {spec.name!r} with the value {value}")
        if isinstance(value, str) and "\x00" in value and spec.name in ("interface", "host", "master"):
            raise core.Finding(f"{what} accepted key {spec.name!r} with a NUL byte: {value[:80]!r}")
    for address in getattr(loaded, "masters", ()):  # a minion's masters, resolved as the daemon will
        if any(c < " " for c in address.host) or not 0 < address.ret_port < 65536:
            raise core.Finding(f"{what} accepted the master {address!r}")
    if not isinstance(loaded, forwardconf.ForwardConfig):
        core.only_documented(lambda: config.to_dict(loaded), f"to_dict of what {what} accepted")  # type: ignore


def _load_one(directory: Path, name: str, data: bytes, load, clock: core.Clock) -> object:
    path = directory / name
    path.write_bytes(data)
    with clock.bound(f"loading a {len(data)}-byte {name} file"):
        loaded = core.only_documented(lambda: load(path), f"the {name} loader")
    check_loaded(loaded, f"the {name} loader")
    return loaded


def _config_target(name: str, cls: type | None) -> None:
    load = forwardconf.load if cls is None else (lambda path: config.load(cls, path))

    @core.target(f"config_{name}", f"eventbus.{'forwardconf' if cls is None else 'config'}.load of the {name} "
                                   f"file{' and its users file' if name == 'api' else ''} on arbitrary YAML",
                 max_len=8192, per_input=5.0, words=CONFIG_WORDS, seeds=lambda: config_seeds(name))
    def setup() -> Iterator[core.OneInput]:
        box = core.Sandbox(core.sandbox_root(f"config_{name}"))
        clock = core.Clock(2.0)
        for seed in config_seeds(name):  # what a loader imports on first use, imported before the blocker
            path = box.inside / name
            path.write_bytes(core.messages(seed)[0][0])
            with contextlib.suppress(Exception):
                load(path)
        with core.quiet_logs() as watcher:
            def run(data: bytes) -> None:
                parts = core.messages(data)
                text = b"".join(parts[0])
                with no_new_imports():
                    loaded = _load_one(box.inside, name, text, load, clock)
                    if name == "api" and isinstance(loaded, ApiConfig):
                        check_users(loaded, b"".join(parts[1]) if len(parts) > 1 else b"", box, clock)
            try:
                yield core.checked(run, watcher, box)
            finally:
                box.remove()


def check_users(settings: ApiConfig, users: bytes, box: core.Sandbox, clock: core.Clock) -> None:
    """The API's users file as the API reads it at a login (only where it lies inside the sandbox)."""
    backends = core.only_documented(
        lambda: auth.read_external_auth(settings.external_auth, settings.root_dir, str(settings.source)),
        "the API's external_auth")
    if isinstance(backends, Exception):
        return
    for backend in backends.values():
        path = Path(backend.users_file)
        if box.inside not in path.parents:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(users)
        except (OSError, ValueError):
            continue
        with clock.bound("reading the users file"):
            core.only_documented(lambda: auth.read_users(path), "the API's users file reader")


_config_target("master", MasterConfig)
_config_target("minion", MinionConfig)
_config_target("api", ApiConfig)
_config_target("forward", None)


def config_seeds(name: str) -> list[bytes]:
    """The example config (``conf/``), the files the tests write, and each key alone."""
    seeds = [(REPO_CONF / name).read_bytes()]
    cls = {"master": MasterConfig, "minion": MinionConfig, "api": ApiConfig, "forward": forwardconf.ForwardConfig}[name]
    defaults = config.to_dict(config.load(cls, None)) if name != "forward" else {}
    for key, value in defaults.items():
        if key in ("conf_file", "id"):
            continue
        if isinstance(value, str) and value.startswith("/"):  # this machine's default root: a relative path
            value = "var/lib/x"
        seeds.append(yaml.safe_dump({key: value}).encode())
    if name == "minion":
        seeds.append(b"root_dir: /tmp/x\nid: web1\nmaster: 10.0.0.1\nheartbeat_interval: 1.0\nspool_max_events: 10\n")
        seeds.append(b"id: web1\nmaster: [m1, 'm2:4600', {host: m3, ret_port: 5000, publish_port: 5001}]\n"
                     b"master_type: failover\nmaster_alive_interval: 2\nmaster_failback: true\n")
    if name == "api":
        seeds.append(core.join([[yaml.safe_dump({
            "root_dir": ".", "port": 8000, "master_config": "master", "jwt_secret": "j" * 40,
            "external_auth": {"file": {"users_file": "users", "alice": ["*"], "bob": ["myco/*"]}}}).encode()],
            [b"alice:scrypt$16384$8$1$c2FsdA$aGFzaA\nbob:x\n# comment\n"]]))
    if name == "forward":
        seeds.append(b"brokers:\n  - {name: a, type: file, path: x.log, tags: ['*'], format: cloudevents}\n"
                     b"  - {name: h, type: webhook, url: 'http://u:p@h/x', secret_env: HOME}\n")
        seeds.append(b"event_broker:\n  type: SQL\n  dialect: sqlite\n  db: e.db\n")
    if name == "master":
        seeds.append(b"reactor:\n  - 'myco/*':\n      - fire: {tag: 'a/{{ id }}', data: {x: '{{ payload.x }}'}}\n"
                     b"      - run: {argv: ['/bin/true'], timeout: 3}\n")
    return seeds
