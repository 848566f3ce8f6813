"""``python -m bench [what ...]``: run benchmarks, append their figures to bench/results, render bench/README.md."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bench.common import REPO_ROOT, append_result, loadavg, machine, wait_for_quiet

log = logging.getLogger("bench")

ALL = ("serving", "openloop", "tail", "storage", "memory", "reload", "shutdown", "ingest", "training", "profile",
       "tracing")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("what", nargs="*", default=["all"],
                        help=f"any of {', '.join(ALL)}, soak (not part of all), report, all (default: all, then "
                        "report)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one load run (default 20)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per variant and scenario, serving, storage and ingest (default 3)")
    parser.add_argument("--scenarios", nargs="+", default=["one_row", "batch_1000"],
                        choices=["one_row", "batch_1000"], help="serving payloads (default both)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9],
                        help="openloop: arrival rates as shares of each variant's measured maximum")
    parser.add_argument("--threads", type=int, default=None,
                        help="GUNICORN_THREADS of our serving (default: what its gunicorn.conf.py sets)")
    parser.add_argument("--memory-requests", type=int, default=100_000,
                        help="requests between the two RSS readings (0 to skip)")
    parser.add_argument("--storage-backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"],
                        help="storage: FerretDB backends to compare (default both; PostgreSQL installed on first use)")
    parser.add_argument("--storage-read-rows", type=int, default=100_000,
                        help="storage: rows stored for the training read (default 100000)")
    parser.add_argument("--ingest-rows", type=int, default=100_000)
    parser.add_argument("--training-rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait for the 1-minute load average to drop below this before starting")
    parser.add_argument("--wait-load", type=float, default=600.0, help="wait at most this many seconds for it")
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="length of the soak (default 600)")
    parser.add_argument("--fault-every", type=float, default=120.0, help="seconds between soak faults (default 120)")
    parser.add_argument("--tag", default="", help="a label stored with every figure of this invocation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run what was asked for, then render the report."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("devstack", "urllib3", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    wanted = list(ALL) if "all" in args.what else [w for w in args.what if w != "report"]
    if wanted:
        load, quiet = wait_for_quiet(args.max_load, args.wait_load)
        append_result({"bench": "session", "what": wanted, "argv": sys.argv[1:], "tag": args.tag,
                       "load_start": load, "quiet": quiet, "machine": machine()})
    threads = args.threads  # None: the service's own default
    for what in wanted:
        log.info("== %s (load average %s)", what, loadavg())
        if what == "serving":
            from bench import serving_bench

            records = serving_bench.run(seconds=args.seconds, runs=args.runs, threads=threads,
                                        scenarios=tuple(args.scenarios), tag=args.tag)
            for key, figures in sorted(serving_bench.summarize(records).items()):
                print(key, json.dumps(figures))
        elif what == "storage":
            from bench import storage_bench

            for record in storage_bench.run(runs=args.runs, backends=tuple(args.storage_backends),
                                            read_rows=args.storage_read_rows, tag=args.tag):
                print(json.dumps(record))
        elif what == "memory":
            from bench import serving_bench

            for record in serving_bench.run_memory(requests_count=args.memory_requests, threads=threads,
                                                   tag=args.tag):
                print(json.dumps(record))
        elif what == "reload":
            from bench import reload_bench

            print(json.dumps(reload_bench.run(threads=threads, tag=args.tag), indent=1))
        elif what == "shutdown":
            from bench import shutdown_bench

            print(json.dumps(shutdown_bench.run(threads=threads, tag=args.tag), indent=1))
        elif what == "ingest":
            from bench import ingest_bench

            print(json.dumps(ingest_bench.run(rows=args.ingest_rows, runs=args.runs, tag=args.tag), indent=1))
        elif what == "training":
            from bench import training_bench

            print(json.dumps(training_bench.run(sizes=args.training_rows, tag=args.tag), indent=1))
        elif what == "profile":
            from bench import profile

            print(json.dumps(profile.run(threads=threads, seconds=min(args.seconds, 15), tag=args.tag), indent=1))
        elif what == "tracing":
            from bench import tracing_bench

            print(json.dumps(tracing_bench.run(seconds=args.seconds, runs=args.runs, threads=threads, tag=args.tag),
                             indent=1))
        elif what == "openloop":
            from bench import openloop_bench

            print(json.dumps(openloop_bench.run(seconds=args.seconds, runs=args.runs, shares=tuple(args.rates),
                                                threads=threads, tag=args.tag), indent=1))
        elif what == "tail":
            from bench import openloop_bench
            print(json.dumps(openloop_bench.run_tail(seconds=args.seconds, runs=args.runs, tag=args.tag), indent=1))
        elif what == "soak":
            from bench import soak

            record = soak.run(seconds=args.soak_seconds, fault_every=args.fault_every, tag=args.tag)
            print(json.dumps({k: v for k, v in record.items() if k not in ("samples", "machine")}, indent=1))
        else:
            raise SystemExit(f"unknown benchmark {what!r}")
    if wanted:
        append_result({"bench": "session-end", "what": wanted, "tag": args.tag, "load_end": loadavg()[0]})
    if "all" in args.what or "report" in args.what or wanted:
        from bench import report

        path = report.render()
        print(f"report: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
