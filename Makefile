# The two commands: `make demo` (local stack + demo session) and `make test` (every test).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: demo test lint down

demo:
	venv=$$(bash e2e/bootstrap.sh)
	$$venv/bin/skillwarden dev demo

test:
	venv=$$(bash e2e/bootstrap.sh)
	export PATH="$$venv/bin:$$PATH"
	ruff check .
	mypy
	python -m skillwarden_devstack.checks
	pytest -p no:cacheprovider

down:
	venv=$$(bash e2e/bootstrap.sh)
	$$venv/bin/skillwarden dev down
