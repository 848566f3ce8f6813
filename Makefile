# Entry points: `make install`, `make test` (what CI runs), `make dev` (the whole stack natively), `make lint`.
.PHONY: install test dev lint

install:
	scripts/install.sh

test:
	scripts/test.sh

# Starts FerretDB, S3, MLflow and the three services behind Nginx; Ctrl-C stops everything.
# Extra flags: make dev DEVSTACK_ARGS="--fixed-ports"
dev: install
	PYTHONPATH=scripts .venv/bin/python -m devstack up $(DEVSTACK_ARGS)

lint: install
	.venv/bin/ruff check .
