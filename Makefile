# Entry points: `make install`, `make test` (what CI runs), `make dev` (the whole stack natively), `make lint`,
# `make bench` (every benchmark, then bench/README.md; about 45 min; BENCH_ARGS="serving --runs 1" for a part).
.PHONY: install test dev lint bench

install:
	scripts/install.sh

test:
	scripts/test.sh

# Starts FerretDB, S3, MLflow, the three services behind Nginx and Prometheus; Ctrl-C stops everything.
# On the README's ports where free (it says which it took instead); extra flags: make dev
# DEVSTACK_ARGS="--random-ports" (or "--no-prometheus", "--tracing": Jaeger with every app's traces)
dev: install
	PYTHONPATH=scripts .venv/bin/python -m devstack up $(DEVSTACK_ARGS)

lint: install
	.venv/bin/ruff check .

# Benchmarks against the original template's paths; figures go to bench/results, the report to bench/README.md.
bench: install
	bench/run.sh $(BENCH_ARGS)
