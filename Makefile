# Two commands on a fresh clone: `make demo` and `make test`. Both install what they need
# into .venv first (Python 3.11+ must be on PATH as python3).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install redis bench chromium docs

$(STAMP): pyproject.toml plugins/jobwatch-redis/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cli,test,bench,docs]' -e plugins/jobwatch-redis
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/jobwatch demo

# The Redis tests need a server on 127.0.0.1:6379; start one when none answers.
redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
	  mkdir -p /var/lib/redis /var/log/redis; \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
	    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log; \
	  for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done; }

# The dashboard's browser tests drive Debian's chromium package, never a downloaded browser
# (they skip, saying so, where none is installed); CI runs as root and installs it.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
test: install redis
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) bench/run_all.py

# The documentation site, API reference included, into site/; any warning fails the build.
# (tests/test_site.py runs the same build in `make test`.)
docs: install
	$(PY) -m mkdocs build --strict
