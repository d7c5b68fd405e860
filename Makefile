# `make run` serves the API, `make test` runs the suite; both set up .venv from nothing.
# `make bench` measures throughput and cost per request against references (bench/run.py);
# `make bench-login-timing` times failed logins for known and unknown users, and
# `make bench-reset-timing` reset links asked for known and unknown addresses (make bench runs it).
# `make fuzz` runs schemathesis against the real server (scripts/fuzz.py, which lists its settings).
# `make e2e-browser` drives Swagger UI on /docs in headless Chromium (tests/browser/conftest.py).
# `make e2e` runs the production topology on loopback: nginx, two gunicorns, PgBouncer (tests/e2e).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi

.PHONY: run test e2e e2e-browser lint bench bench-login-timing bench-reset-timing fuzz migrate clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "DevLab needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.browser: $(VENV)/.dev requirements-browser.txt
	$(BIN)/pip install --quiet -r requirements-browser.txt
	touch $@

migrate: $(VENV)/.runtime
	$(BIN)/flask db upgrade

run: migrate
	$(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

# Debian's nginx and pgbouncer, installed when missing (which needs root); `make e2e` and
# `make lint` run them from temporary configuration files, never as services.
NGINX := /usr/sbin/nginx
PGBOUNCER := /usr/sbin/pgbouncer
$(NGINX) $(PGBOUNCER):
	@echo "$@ not found: installing Debian's $(notdir $@) package (needs root)"
	apt-get update -qq && apt-get install -y -qq $(notdir $@) >/dev/null

test: $(VENV)/.dev
	$(BIN)/python -m pytest --ignore=tests/e2e $(PYTEST_ARGS)

e2e: $(VENV)/.dev $(NGINX) $(PGBOUNCER)
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# The FastAPI reference lives in an environment of its own, never in requirements.txt.
bench/.venv/.installed: bench/requirements.txt
	$(PYTHON) -m venv bench/.venv
	bench/.venv/bin/pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(VENV)/.runtime bench/.venv/.installed bench-reset-timing
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/devlab_test} \
		$(BIN)/python bench/run.py

# The SMTP server it mails to is aiosmtpd, a test tool (requirements-dev.txt).
bench-reset-timing: $(VENV)/.dev
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/devlab_test} \
		$(BIN)/python bench/reset_timing.py $(BENCH_ARGS)

bench-login-timing: $(VENV)/.runtime
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/devlab_test} \
		$(BIN)/python scripts/bench_login_timing.py $(BENCH_ARGS)

fuzz: $(VENV)/.dev
	$(BIN)/python scripts/fuzz.py

e2e-browser: $(VENV)/.browser
	@test -x "$${E2E_CHROMIUM:-/usr/lib/chromium/chromium}" || { \
		echo "chromium not found: installing Debian's package (needs root)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

lint: $(VENV)/.dev $(NGINX)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile deploy/pgbouncer/Dockerfile
	$(BIN)/python scripts/nginx_loopback.py
	@command -v docker-compose >/dev/null || { \
		echo "docker-compose not found: installing Debian's package (needs root)"; \
		apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
	JWT_SECRET_KEY=lint-only-placeholder-value-of-enough-length POSTGRES_PASSWORD=lint-only \
		POSTGRES_APP_PASSWORD=lint-only \
		AUDIT_SIGNING_KEY_FILE=lint-only-audit-signing-key.pem docker-compose --profile proxy config --quiet
	docker-compose -f deploy/test-services.yml config --quiet

clean:
	rm -rf $(VENV) bench/.venv .pytest_cache .ruff_cache
