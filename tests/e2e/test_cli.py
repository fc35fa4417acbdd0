"""The CLI as a user types it: watch, fire, daemons, and every kind of bad input."""
from __future__ import annotations

import json
import subprocess

import pytest

from eventbus import event
from tests.helpers import EVENTBUS, Daemon, run_cli, wait_for, write_config

STAMP_LEN = len("2026-11-21T09:19:17.751376")


def watch_lines(node, count: int, *args: str, fire: list[tuple[str, dict]]) -> list[str]:
    """Run ``eventbus watch --count N ARGS``, fire events once it listens, return its lines."""
    proc = node.start_listener("watch", "--count", str(count), "-c", str(node.config_dir), *args)
    with event.get_event("master", opts=node.opts(), listen=False) as bus:
        for tag, data in fire:
            bus.fire_event(data, tag)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out.splitlines()


def test_watch_prints_tag_tab_json_per_event_like_state_event(master):
    lines = watch_lines(master, 2, fire=[("myco/event/success", {"message": "It works!"}),
                                         ("salt/job/1/new", {"jid": "1", "n": [1, 2]})])
    assert len(lines) == 2
    tag, text = lines[0].split("\t")
    assert tag == "myco/event/success"
    data = json.loads(text)
    assert data["message"] == "It works!" and len(data["_stamp"]) == STAMP_LEN
    # Byte for byte: json.dumps with default separators, insertion order, one line.
    assert text == json.dumps(data)
    assert lines[1].startswith("salt/job/1/new\t{")


def test_watch_filters_by_glob_and_by_regex(master):
    fire = [("salt/auth", {}), ("salt/job/20130802115730568475/new", {}), ("salt/job/x/ret/m1", {}),
            ("salt/job/20130802115730568476/new", {})]
    lines = watch_lines(master, 2, "salt/job/*/new", fire=fire)
    assert [line.split("\t")[0] for line in lines] == [
        "salt/job/20130802115730568475/new", "salt/job/20130802115730568476/new"]
    lines = watch_lines(master, 1, r"salt/job/\d+/ret/.*|salt/job/x/ret/m\d", fire=fire)
    assert [line.split("\t")[0] for line in lines] == ["salt/job/x/ret/m1"]


def test_watch_pretty_sorts_keys_and_indents(master):
    lines = watch_lines(master, 1, "--pretty", fire=[("p/t", {"b": 1, "a": {"z": 1, "y": 2}})])
    text = "\n".join(lines)
    tag, body = text.split("\t", 1)
    data = json.loads(body)
    assert tag == "p/t" and body == json.dumps(data, sort_keys=True, indent=4)


def test_watch_quiet_prints_nothing_and_still_counts(master):
    assert watch_lines(master, 2, "--quiet", fire=[("q/1", {}), ("q/2", {})]) == []


def test_watch_pipes_into_a_shell_loop_line_by_line(master):
    script = (f'"{EVENTBUS}" watch "pipe/*" --count 3 -c "{master.config_dir}" | '
              'while read -r tag data; do echo "got $tag"; done')
    before = master.handshakes()
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: master.handshakes() > before, 15, what="watch to listen")
    with event.get_event("master", opts=master.opts(), listen=False) as bus:
        for n in range(3):
            bus.fire_event({"n": n}, f"pipe/{n}")
    # Each line must arrive as it happens (flushed), not when watch exits.
    lines = [proc.stdout.readline() for _ in range(3)]
    assert lines == ["got pipe/0\n", "got pipe/1\n", "got pipe/2\n"]
    assert proc.wait(10) == 0, "watch --count 3 ends the loop"


def test_watch_flushes_each_event_while_running(master):
    proc = master.start_listener("watch", "-c", str(master.config_dir))
    try:
        with event.get_event("master", opts=master.opts(), listen=False) as bus:
            bus.fire_event({"live": True}, "live/one")
        line = proc.stdout.readline()
        assert line.startswith("live/one\t") and proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(5)


def test_watch_minion_node(master, minion):
    proc = minion.start_listener("watch", "--node", "minion", "--count", "1", "-c", str(minion.config_dir))
    assert run_cli("fire", '{"on": "minion"}', "m/tag", "-c", str(minion.config_dir)).returncode == 0
    out, _ = proc.communicate(timeout=10)
    assert out.startswith("m/tag\t") and json.loads(out.split("\t")[1])["on"] == "minion"


def test_fire_json_and_yaml_onto_the_master(master):
    with event.get_event("master", opts=master.opts()) as bus:
        result = run_cli("fire", '{"message": "It works!"}', "myco/event/success", "--node", "master",
                         "-c", str(master.config_dir))
        assert result.returncode == 0, result.stderr
        assert bus.get_event(wait=5, tag="myco/")["message"] == "It works!"
        result = run_cli("fire", "{message: from yaml, n: 3}", "myco/yaml", "--node", "master",
                         "-c", str(master.config_dir))
        assert result.returncode == 0, result.stderr
        data = bus.get_event(wait=5, tag="myco/yaml")
        assert data["message"] == "from yaml" and data["n"] == 3


def run_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run ``eventbus ARGS`` with stderr on a real terminal (a pty), stdout on a pipe: (code, stdout, terminal)."""
    import os
    import pty

    main_fd, terminal_fd = pty.openpty()
    try:
        proc = subprocess.Popen([EVENTBUS, *args], stdout=subprocess.PIPE, stderr=terminal_fd, text=True)
        os.close(terminal_fd)
        out, _ = proc.communicate(timeout=30)
        shown = b""
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main_fd)
    return proc.returncode, out, shown.decode()


def test_fire_tells_a_person_on_a_terminal_which_bus_it_used_and_scripts_nothing(minion):
    conf = str(minion.config_dir)
    code, out, shown = run_on_a_terminal("fire", '{"n": 1}', "tty/one", "-c", conf)
    assert code == 0 and out == ""
    lines = shown.strip().splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("fired on the minion bus (") and str(minion.sock_dir) in lines[0]
    assert lines[0].endswith(f"watch it with: eventbus watch --node minion -c {conf}")
    # On a pipe, as in a script: nothing on either stream.
    piped = run_cli("fire", '{"n": 2}', "tty/two", "-c", conf)
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "", "")


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["not: [valid", "a/tag"], "neither JSON nor YAML"),
    (["[1, 2, 3]", "a/tag"], "must be a JSON or YAML mapping"),
    (["just text", "a/tag"], "must be a JSON or YAML mapping"),
    (["{}", ""], "tag must be a non-empty str"),
])
def test_fire_bad_input_is_one_error_line(master, args, expected):
    line = one_error_line(run_cli("fire", *args, "--node", "master", "-c", str(master.config_dir)))
    assert expected in line


def test_fire_oversize_names_both_sizes(master_node):
    master_node.path.write_text(master_node.path.read_text() + "max_event_size: 2048\n")
    line = one_error_line(run_cli("fire", json.dumps({"blob": "x" * 3000}), "big/one", "--node",
                                  "master", "-c", str(master_node.config_dir)))
    assert "over max_event_size of 2048 bytes" in line and "big/one" in line


def test_fire_and_watch_without_a_daemon(master_node):
    line = one_error_line(run_cli("fire", "{}", "a/tag", "--node", "master", "-c",
                                  str(master_node.config_dir), timeout=20))
    assert "no master daemon answered" in line and str(master_node.sock_dir) in line
    line = one_error_line(run_cli("watch", "-c", str(master_node.config_dir), timeout=20))
    assert "no master daemon is running" in line


@pytest.mark.parametrize("args", [["watch", "--bogus"], ["fire"], ["nosuchcommand"],
                                  ["watch", "--count", "0"], ["watch", "--node", "moon"]])
def test_usage_errors_are_one_line(args, master):
    line = one_error_line(run_cli(*args, "-c", str(master.config_dir)))
    assert "see 'eventbus" in line


def test_missing_config_dir(short_tmp):
    line = one_error_line(run_cli("watch", "-c", str(short_tmp / "nope")))
    assert "config directory does not exist" in line


@pytest.mark.parametrize("text, expected", [
    ("log_level: info\npublish_port: [4505\n", "malformed YAML"),
    ("publish_prot: 4505\n", "unknown key 'publish_prot'"),
    ("max_event_size: lots\n", "'max_event_size' has value 'lots'"),
])
def test_daemon_with_a_bad_config_exits_with_one_line(short_tmp, text, expected):
    conf = short_tmp / "conf"
    write_config(conf, "master")
    (conf / "master").write_text(f"root_dir: {short_tmp}\n" + text)
    daemon = Daemon.eventbus("master", conf).start()
    assert daemon.proc.wait(15) != 0
    lines = daemon.log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert str(conf / "master") in lines[0]


def test_daemon_refuses_a_sock_dir_that_is_too_long(short_tmp):
    conf = short_tmp / "conf"
    write_config(conf, "master", root_dir=str(short_tmp), sock_dir="s" * 110)
    daemon = Daemon.eventbus("master", conf).start()
    assert daemon.proc.wait(15) != 0
    assert "too long" in daemon.log and "Traceback" not in daemon.log


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("eventbus ")
    out = run_cli("--help").stdout
    for command in ("master", "minion", "watch", "fire"):
        assert command in out


@pytest.mark.parametrize("minion_id", [".", "..", "a" * 251, "web\x01one", "a/b"])
def test_minion_with_an_id_the_link_would_refuse_does_not_start(short_tmp, minion_id):
    conf = short_tmp / "conf"
    write_config(conf, "minion", root_dir=str(short_tmp), sock_dir="n", id=minion_id)
    daemon = Daemon.eventbus("minion", conf).start()
    assert daemon.proc.wait(15) != 0
    lines = daemon.log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "key 'id'" in lines[0], lines
    assert "an id (1 to" in lines[0]


def test_a_bad_user_name_is_one_error_line_not_a_traceback(short_tmp):
    conf = short_tmp / "conf"
    write_config(conf, "api", root_dir=str(short_tmp), external_auth={"file": {"users_file": "users"}})
    done = run_cli("user", "add", "bad:name", "--password-stdin", "-c", str(conf), input="pw\n")
    assert done.returncode == 1
    assert done.stderr.startswith("error: user name 'bad:name'") and len(done.stderr.splitlines()) == 1


def test_reactor_status_shows_a_stopped_reactors_last_counts_without_loading_the_daemons_code(master_node):
    """The reactor's status file is read the one way ``eventbus status`` reads it (``eventbus.systemstatus``)."""
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = master_node.settings.cachedir / "reactor" / "status.json"
    status.parent.mkdir(parents=True)
    status.write_text(json.dumps({"pid": int(gone.stdout), "running": True, "rules": 3, "in_flight": 2, "done": 5,
                                  "failed": 1, "lost": 0, "cursor": 10}))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "eventbus.cli.main", "reactor", "--status", "-c",
                           str(master_node.config_dir)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert dict(line.split(": ", 1) for line in done.stdout.splitlines()) == {
        "running": "no", "rules": "0", "in_flight": "0", "done": "5", "failed": "1", "lost": "0", "cursor": "10",
        "cursor_lag": "unknown"}
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "eventbus.config" in imported and not [name for name in imported if name.startswith("eventbus.daemon")]
