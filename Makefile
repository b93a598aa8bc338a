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

# Local development: DEBUG on, Flower behind admin:admin, the supplier stand-in on :8001,
# the SMTP sink on :1025, the warehouse and carrier stand-ins (fulfilment) on :8002/:8003.
# The settings read .env themselves and let these exports win over it (scripts/run-local).
run: export DJANGO_DEBUG ?= 1
run: export FLOWER_BASIC_AUTH ?= admin:admin
run: export SUPPLIER_API_URL ?= http://127.0.0.1:8001
run: export STATUS_CALLBACK_URL ?= http://127.0.0.1:8001/status
run: export FULFILMENT_WAREHOUSE_API_URL ?= http://127.0.0.1:8002
run: export FULFILMENT_CARRIER_API_URL ?= http://127.0.0.1:8003
# Mail goes over real SMTP to the local sink (scripts/run-local starts it on :1025).
run: export DJANGO_EMAIL_BACKEND ?= django.core.mail.backends.smtp.EmailBackend
run: export EMAIL_HOST ?= 127.0.0.1
run: export EMAIL_PORT ?= 1025
run: venv
	scripts/ensure-redis
	$(PY) manage.py migrate --noinput
	$(PY) manage.py local_setup
	exec scripts/run-local

test: venv
	scripts/ensure-redis
	scripts/test

lint: venv
	ruff check . && ruff format --check .

# Each benchmark brings its own redis-server and database (var/bench/); see README "Performance".
bench: venv
	$(PY) bench/refresh.py
	$(PY) bench/refresh.py --products 10000 --database postgres
	$(PY) bench/overhead.py
	$(PY) bench/recovery.py
	$(PY) bench/standin.py
	$(PY) bench/reports.py
	$(PY) bench/db_connections.py
	$(PY) bench/fairness.py
	$(PY) bench/notifications.py
	$(PY) bench/fulfilment.py
