# Mailflow: `make run` starts the whole stack locally, `make test` runs the tests.
# The first use of either sets up .venv (Python 3.11+) with every dependency, nats-server included.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: run test test-slow test-all test-attack test-chaos test-ha test-web fuzz bench lint setup clean

# The venv gets the images' pinned runtime versions (deploy/requirements.lock, as constraints), so the
# tests run what the images ship; to upgrade, install without them and rewrite it with deploy/lock.py.
$(STAMP): pyproject.toml deploy/requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Mailflow needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint deploy/requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/mailflow up

# The attack suites, the chaos run, the failover runs and the browser tests are tiers of their own (below): neither `test` nor
# `test-slow` runs them.
OWN_TIERS := attack or chaos or ha or web

test: $(STAMP)
	$(PYTEST) -m "not slow and not ($(OWN_TIERS))" -q

# Exit status 5 means "no test selected": not a failure for a tier that may be empty.
test-slow: $(STAMP)
	$(PYTEST) -m "slow and not ($(OWN_TIERS))" -q; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# Attacks (issue 12): fuzzing (kept corpus, Hypothesis, a short Atheris run), connection floods and
# slowloris, faults (disk full, PostgreSQL restarted, NATS down). Prints the figures it measures.
test-attack: $(STAMP)
	$(PYTEST) -m attack -q -s tests/fuzz tests/attack

# Chaos: mail under load while every service and nats-server are SIGKILLed in turn; then exactly once.
# MAILFLOW_CHAOS_MESSAGES (default 3000) and MAILFLOW_CHAOS_SECONDS (sending time, default 150) scale it.
test-chaos: $(STAMP)
	$(PYTEST) -m chaos -q -s tests/chaos

# No single point of failure (issue 16): NATS as a three-node cluster, two replicas of every service on
# PostgreSQL (MAILFLOW_TEST_POSTGRES_URL), one of each and one NATS node SIGKILLed under load; prints the
# failover time per service.
test-ha: $(STAMP)
	$(PYTEST) -m ha -q -s tests/ha

# The web console in a real browser (issue 17): Debian's chromium and chromium-driver (/usr/bin/chromium,
# /usr/bin/chromedriver; `apt-get install -y chromium chromium-driver`), headless, driven by Selenium,
# against the whole stack; saves docs/screenshots/*.png and prints each page's render time.
test-web: $(STAMP)
	$(PYTEST) -m web -q -s tests/web

# Coverage-guided fuzzing (Atheris) of every parser that sees client bytes, MAILFLOW_FUZZ_SECONDS (default
# 60) per target; new coverage is merged into tests/fuzz/corpus/. `make fuzz TARGETS="mime imap-parser"`.
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.run --keep --jobs 2 $(TARGETS)

test-all: $(STAMP)
	$(PYTEST) -q

# make bench            every benchmark (tests/bench/bench_*.py): Mailflow, then Postfix + Dovecot with the
#                        same load tools (tests/bench/load), one table side by side, results in bench-results/;
#                        installs Debian's postfix, dovecot-imapd and dovecot-pop3d first if missing
# make bench ONLY=smtp   just tests/bench/bench_smtp.py (or e2e, imap, store, auth, tls)
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
# then brings the compose stack up from images built here: mail round trip, delivery scaled to 3, a
# certificate from pebble (ACME), and NATS as three containers (deploy/compose/ha.yml) with one killed.
.PHONY: test-compose
test-compose: $(STAMP)
	bash deploy/ci/local-images.sh
	MAILFLOW_TEST_COMPOSE=1 $(PYTEST) tests/deploy/test_compose_roundtrip.py tests/deploy/test_compose_acme.py tests/deploy/test_compose_ha.py -q
