# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONF ?= conf

.PHONY: run test bench install clean chromium docs

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m cli.devrun $(CONF)

test: install chromium
	$(PY) -m pytest -q tests

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
