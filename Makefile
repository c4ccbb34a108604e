# Canteen one-card — developer entry points. `make demo` and `make test` install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-pg test-pg-core test-cluster walkthrough bench lint chaos chaos-cluster vopr clean screenshots

STUBS  := hardware/board/stubs/machine.pyi

install: $(STAMP) $(STUBS)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,face]'
	# face_recognition declares a "dlib" requirement that would compile dlib from source
	# (tens of minutes). The [face] extra above installed dlib-bin, a prebuilt wheel of the
	# same library, so install face_recognition itself without its dependency list.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps face-recognition==1.3.0
	@touch $(STAMP)

# MicroPython stubs for type-checking the peripheral board's firmware (tests/test_board_firmware.py)
$(STUBS): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade --target hardware/board/stubs micropython-rp2-stubs
	@touch $(STUBS)

demo: install
	$(VENV)/bin/canteen-sim demo

test: install
	$(PY) -m pytest

# the everyday loop: everything but the slow runs (chaos, city, payments demo, scenarios,
# crash, API fuzzing); `make test` still runs everything
test-fast: install
	$(PY) -m pytest -m "not slow"

# the whole suite with PostgreSQL as the server's database: the tests start their own
# PostgreSQL (initdb into a temporary folder, deploy/postgresql/canteen.conf, a free port);
# needs the PostgreSQL server package (Debian: postgresql). Tests about SQLite itself skip.
test-pg: install
	CANTEEN_TEST_DATABASE=postgresql $(PY) -m pytest

# what CI runs on PostgreSQL besides `make test`: the money core (ledger, ingest, reversals,
# settlement, clearing, quarantine, the money/registry API and CLI, audit) and the adapter,
# run-once roles, moving a city over and the terminal-id rule
PG_CORE := tests/test_pg_adapter.py tests/test_run_once.py tests/test_migrate_db.py \
	tests/test_terminal_ids.py tests/test_ledger.py tests/test_amount_domain.py tests/test_ingest.py \
	tests/test_ingest_batching.py tests/test_settlement.py tests/test_clearing.py tests/test_quarantine.py \
	tests/test_api_money.py tests/test_api_registry.py tests/test_api_roles.py tests/test_cli_money.py \
	tests/test_audit.py tests/test_reversal_server.py tests/test_periods.py tests/test_cards_and_leavers.py \
	tests/test_refund_approval.py tests/test_declare_restored.py
# the 3-node NATS cluster (node kills, sessions, a terminal moving node) and a short chaos
# run on it (2 server processes, PostgreSQL): slow and timing-heavy
test-cluster: install
	CANTEEN_TEST_CLUSTER=1 $(PY) -m pytest tests/test_nats_cluster.py tests/test_chaos_cluster.py

test-pg-core: install
	CANTEEN_TEST_DATABASE=postgresql $(PY) -m pytest $(PG_CORE)

# the README's "Running it for real" commands, run in order against a real Mosquitto
# (tests/test_readme_walkthrough.py; `make test` runs it too)
walkthrough: install
	$(PY) -m pytest tests/test_readme_walkthrough.py

bench: install
	$(PY) -m bench.run

# the README's pictures of the web console (docs/screenshots/*.png), taken by the browser
# journeys (tests/test_web_browser.py) in Debian's Chromium against a real server
screenshots: install
	CANTEEN_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_web_browser.py tests/test_web_money_browser.py -q

# a longer fault-injection sweep: real processes, every fault kind, one run per seed;
# reports the seeds tried and failed, exits non-zero on any failure
CHAOS_SEEDS   ?= 20
CHAOS_MINUTES ?= 1
chaos: install
	$(VENV)/bin/canteen-sim chaos-sweep --seeds $(CHAOS_SEEDS) --minutes $(CHAOS_MINUTES)

# the chaos run on the cluster: 3 NATS nodes, 2 server processes, PostgreSQL (nats-server and
# the PostgreSQL server installed), node, server-process and PostgreSQL faults among the rest
# (tests/test_chaos_cluster.py, about 80 s); a longer run: canteen-sim chaos --cluster --minutes 5
chaos-cluster: install
	CANTEEN_TEST_CLUSTER=1 $(PY) -m pytest tests/test_chaos_cluster.py

# the deterministic simulator: 1,000,000 sales over many seeds, the real terminal and server
# code under every fault kind, two seeds at a time; fails if any seed fails or any fault or
# business event kind never struck (each failing seed is printed with its replay command)
VOPR_SEEDS ?= 50
VOPR_SALES ?= 20000
VOPR_JOBS  ?= 2
vopr: install
	$(VENV)/bin/canteen-sim vopr --seed 1 --seeds $(VOPR_SEEDS) --sales $(VOPR_SALES) --jobs $(VOPR_JOBS) --require-all-faults

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) hardware/board/stubs var .pytest_cache .hypothesis .ruff_cache *.egg-info
