# Two commands on a fresh clone: `make demo` and `make test`. Both install what they need
# into .venv first (Python 3.11+ must be on PATH as python3).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test check install redis bench chromium docs

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
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	  echo "chromium could not be installed (not root?): the browser tests will skip" >&2

# The checks pyproject configures. A plain `mypy` checks the package, the plugin, the tests,
# examples/ and bench/, all but the conftest.py of the test subfolders: pytest puts each test
# folder on sys.path, so each of those is a top-level module `conftest` and gets a mypy run of
# its own (same cache, a fraction of a second each).
CONFTESTS := $(shell find tests plugins -name conftest.py ! -path tests/conftest.py | sort)

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	@for conftest in $(CONFTESTS); do \
	  echo "$(PY) -m mypy $$conftest"; $(PY) -m mypy $$conftest || exit 1; done

# The checks, then the suite; the first that fails stops it.
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
test: check redis chromium
	@$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	  exit $$rc

bench: install
	$(PY) bench/run_all.py

# The documentation site, API reference included, into site/; any warning fails the build.
# (tests/test_site.py runs the same build in `make test`.)
docs: install
	$(PY) -m mkdocs build --strict
