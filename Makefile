# Canteen one-card — developer entry points. `make demo` and `make test` install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-pg walkthrough bench lint chaos clean

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

# the README's "Running it for real" commands, run in order against a real Mosquitto
# (tests/test_readme_walkthrough.py; `make test` runs it too)
walkthrough: install
	$(PY) -m pytest tests/test_readme_walkthrough.py

bench: install
	$(PY) -m bench.run

# a longer fault-injection sweep: real processes, every fault kind, one run per seed;
# reports the seeds tried and failed, exits non-zero on any failure
CHAOS_SEEDS   ?= 20
CHAOS_MINUTES ?= 1
chaos: install
	$(VENV)/bin/canteen-sim chaos-sweep --seeds $(CHAOS_SEEDS) --minutes $(CHAOS_MINUTES)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) hardware/board/stubs var .pytest_cache .hypothesis .ruff_cache *.egg-info
