"""The built wheel, installed in a fresh venv beside PyPI's python-daemon: what a user's ``pip install`` gets.

The wheel is built from a copy of the checkout: setuptools keeps a ``build/`` folder in the source tree
and puts everything left in it into the next wheel, a module deleted since included. The fresh venv
finds the test venv's packages through a ``.pth`` file (which adds that folder to ``sys.path`` without
running the ``.pth`` files in it, so the checkout's editable finder stays out), and the wheel is
installed by pip run from the fresh venv, which writes a normal install there: the package in its
site-packages and the ``eventbus`` script in its bin/. The import-linter contracts of
``.importlinter`` are checked there, where grimp sees eventbus.daemon, eventbus.netapi and eventbus.cli.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each source folder of the checkout and the import path setup.cfg's package_dir gives it.
SOURCE_FOLDERS = {"eventbus": "eventbus", "daemon": "eventbus/daemon", "netapi": "eventbus/netapi",
                  "cli": "eventbus/cli"}
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".hypothesis", ".pytest_cache", "run", "tests", "bench")


@dataclass(frozen=True)
class Installed:
    source: Path        # the copy of the checkout the wheel was built from
    wheel: Path
    venv: Path
    site_packages: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
        env.update(PYTHONPATH="", VIRTUAL_ENV=str(self.venv), PYTHONDONTWRITEBYTECODE="1")
        return env

    def run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command with the fresh venv's environment, from a folder outside the checkout."""
        return subprocess.run([str(a) for a in args], cwd=self.venv.parent, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def python_code(self, code: str) -> subprocess.CompletedProcess:
        return self.run(self.python, "-c", code)


def _checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    wheels = base / "wheels"
    _checked(subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--quiet", "-w", str(wheels), str(source)],
                            capture_output=True, text=True, timeout=120))
    (wheel,) = wheels.glob("eventbus-*.whl")
    venv = base / "venv"
    _checked(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                            capture_output=True, text=True, timeout=60))
    site_packages = Path(_checked(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, timeout=30)).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "test-venv-packages.pth").write_text("".join(f"{path}\n" for path in ours))
    found = Installed(source, wheel, venv, site_packages)
    before = found.python_code("import eventbus")
    assert before.returncode != 0 and "No module named 'eventbus'" in before.stderr, (
        "before the wheel is installed, eventbus must not be importable in the fresh venv (is the "
        f"checkout's editable finder active there?)\n{before.stdout}{before.stderr}")
    # --ignore-installed: the test venv's editable eventbus is visible through the .pth; leave it be.
    _checked(found.run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
                       "--ignore-installed", "--quiet", wheel, timeout=120))
    return found


def test_eventbus_comes_from_the_wheel_and_pypi_daemon_imports_beside_it(installed):
    proc = _checked(installed.python_code(
        "import sys, daemon, eventbus, eventbus.daemon.bus, eventbus.netapi, eventbus.cli.main\n"
        "print(eventbus.__file__); print(eventbus.daemon.bus.__file__)\n"
        "print(eventbus.netapi.__file__); print(eventbus.cli.main.__file__)\n"
        "print(daemon.__file__); print(hasattr(daemon, 'DaemonContext'))\n"
        "print([type(f).__module__ for f in sys.meta_path if '__editable__' in type(f).__module__])\n"))
    *ours, daemon_file, has_context, editable_finders = proc.stdout.splitlines()
    for path in ours:
        assert Path(path).is_relative_to(installed.site_packages), (path, installed.site_packages)
    assert has_context == "True", f"`import daemon` is not python-daemon: {daemon_file}"
    assert not Path(daemon_file).is_relative_to(installed.site_packages / "eventbus")
    assert editable_finders == "[]"


def test_the_console_script_runs(installed):
    script = installed.venv / "bin" / "eventbus"
    assert script.read_text().splitlines()[0] == f"#!{installed.python}"
    proc = _checked(installed.run(script, "--help"))
    assert proc.stdout.startswith("usage: eventbus")


def test_the_wheel_holds_every_module_and_the_ui(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert "eventbus/netapi/static/ui.html" in names
    missing: dict[str, list[str]] = {}
    for folder, target in SOURCE_FOLDERS.items():
        for path in sorted((installed.source / folder).rglob("*.py")):
            rel = path.relative_to(installed.source / folder).as_posix()
            if f"{target}/{rel}" not in names:
                missing.setdefault(f"{folder}/{Path(rel).parent.as_posix()}", []).append(path.name)
    assert not missing, ("folders whose modules are not in the wheel (is the package in setup.cfg's "
                         f"`packages =`?): {missing}")


def test_the_import_contracts_hold_in_the_installed_package(installed):
    proc = installed.python_code(
        "import sys, eventbus\n"
        "from importlinter.cli import lint_imports\n"
        f"assert eventbus.__file__.startswith({str(installed.site_packages)!r}), eventbus.__file__\n"
        f"sys.exit(lint_imports(config_filename={str(installed.source / '.importlinter')!r}, no_cache=True))\n")
    report = proc.stdout[max(proc.stdout.find("Contracts\n"), 0):]     # after import-linter's logo, if any
    exit_status = proc.returncode
    assert exit_status == 0, f"import-linter:\n{report}\n{proc.stderr}"
    assert "0 broken" in report, report
