# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONF ?= conf

.PHONY: run cluster test bench install clean chromium docs fuzz

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m eventbus.cli.devrun $(CONF)

# A local fleet: a 3-node NATS JetStream cluster on 127.0.0.1 (nats-server) and two masters with their REST
# APIs on it (conf/cluster/a and b); Ctrl-C stops everything.
cluster: install
	$(PY) -m eventbus.cli.devcluster run/cluster/nats --masters conf/cluster/a conf/cluster/b

# Two workers, each test file on one of them (its module fixtures, e.g. the README tour's make run, stay
# whole): most tests wait on daemons, brokers and clusters, not on the CPU.
test: install chromium
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# The REST API's browser test drives headless Chromium; install it on a fresh (Debian) machine,
# without the recommended packages (printer configuration, desktop pieces) a headless test never uses.
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

bench: install
	$(PY) -m bench.run

# The config key tables of README.md and docs/*.md, rendered from eventbus/configkeys.py.
docs: install
	$(PY) -m eventbus.configdoc --write

clean:
	rm -rf $(VENV) run *.egg-info

# Every fuzz target under atheris for FUZZ_SECONDS each, or until FUZZ_INPUTS inputs each (0: no such
# limit), e.g. `make fuzz FUZZ_SECONDS=0 FUZZ_INPUTS=1000000` (docs/fuzz.md); a summary per target
# (inputs, coverage, findings) is printed and written to bench/results/fuzz-latest.md.
FUZZ_SECONDS ?= 15
FUZZ_INPUTS ?= 0
FUZZ_TARGETS ?=

$(VENV)/.fuzz-installed: $(VENV)/.installed setup.cfg
	$(PY) -m pip install --quiet -e '.[fuzz]'
	touch $@

fuzz: $(VENV)/.fuzz-installed
	$(PY) -m tests.fuzz.campaign --seconds $(FUZZ_SECONDS) --inputs $(FUZZ_INPUTS) $(FUZZ_TARGETS)
