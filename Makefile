# Mailflow: `make run` starts the whole stack locally, `make test` runs the tests.
# The first use of either sets up .venv (Python 3.11+) with every dependency, nats-server included.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: run test test-slow test-all bench lint setup clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Mailflow needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/mailflow up

test: $(STAMP)
	$(PYTEST) -m "not slow" -q

# Exit status 5 means "no test selected": not a failure for a tier that may be empty.
test-slow: $(STAMP)
	$(PYTEST) -m "slow" -q; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-all: $(STAMP)
	$(PYTEST) -q

# make bench            every benchmark (tests/bench/bench_*.py): Mailflow, then Postfix + Dovecot with the
#                        same load tools (tests/bench/load), one table side by side, results in bench-results/;
#                        installs Debian's postfix, dovecot-imapd and dovecot-pop3d first if missing
# make bench ONLY=smtp   just tests/bench/bench_smtp.py (or e2e, imap, store)
# make bench PEERS=0     Mailflow alone
PEERS ?= 1
bench: $(STAMP)
	@if [ "$(PEERS)" != 0 ] && [ "$(ONLY)" != store ]; then bash tests/bench/peers/install.sh; fi
	MAILFLOW_BENCH_PEERS=$(PEERS) $(BIN)/python -m tests.bench.run_all $(ONLY)

lint: $(STAMP)
	$(BIN)/ruff check shared services tests

clean:
	rm -rf $(VENV) data

# --- containers: docker compose for real (owner: deploy/) -------------------------------------------
# Starts dockerd if needed, builds the base images (debootstrap) and NATS/PostgreSQL stand-ins once,
# then brings the compose stack up from images built here: mail round trip, then delivery scaled to 3.
.PHONY: test-compose
test-compose: $(STAMP)
	bash deploy/ci/local-images.sh
	MAILFLOW_TEST_COMPOSE=1 $(PYTEST) tests/deploy/test_compose_roundtrip.py -q
