# Two commands: `make run` (the whole product, locally, on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test venv lint bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# Local development: DEBUG on, Flower behind admin:admin, the supplier stand-in on :8001.
run: export DJANGO_DEBUG ?= 1
run: export FLOWER_BASIC_AUTH ?= admin:admin
run: export SUPPLIER_API_URL ?= http://127.0.0.1:8001
run: export STATUS_CALLBACK_URL ?= http://127.0.0.1:8001/status
run: venv
	scripts/ensure-redis
	$(PY) manage.py migrate --noinput
	$(PY) manage.py local_setup
	mkdir -p var && grep -v '^release:' Procfile > var/Procfile.local
	echo "supplier: python manage.py supplier_stub --port 8001" >> var/Procfile.local
	@echo "Starting web (http://127.0.0.1:8000/admin/), workers, Flower" \
	      "(http://127.0.0.1:5555, admin/admin) and the supplier stand-in. Ctrl-C stops all."
	exec honcho -f var/Procfile.local -d . start

test: venv
	scripts/ensure-redis
	scripts/test

lint: venv
	ruff check . && ruff format --check .

bench: venv
	scripts/ensure-redis
	$(PY) bench/refresh.py
	$(PY) bench/reports.py
	$(PY) bench/db_connections.py
