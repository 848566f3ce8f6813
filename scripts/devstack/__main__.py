"""`python -m devstack up`: run the whole stack natively until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from devstack.servers import REPO_ROOT
from devstack.stack import NativeStack, load_or_create_secrets

log = logging.getLogger("devstack")

# The README's ports (the original deployment's); each is used when free (80 needs root), else any free port,
# and the command says which it took instead. --random-ports takes free ports for all.
FIXED_PORTS: dict[str, list[int]] = {
    "serving": [80, 8080],
    "etl": [5554],
    "training": [5555],
    "mlflow": [5000],
    "ferretdb": [27017],
    "s3": [9000],
    "prometheus": [9090],
    "alertmanager": [9093],
    "jaeger": [16686],
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start FerretDB, S3, MLflow, the three services behind Nginx, Prometheus and "
                                   "Alertmanager")
    up.add_argument("--workdir", type=Path, default=REPO_ROOT / ".devstack", help="data and logs (kept)")
    up.add_argument("--random-ports", action="store_true", help="free ports for all, not the README's ports")
    # The README ports are the default now; the old flag is still accepted.
    up.add_argument("--fixed-ports", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--workers", type=int, default=2, help="Gunicorn workers per service")
    up.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus and Alertmanager")
    up.add_argument("--tracing", action="store_true",
                    help="start Jaeger (built on first use: minutes) and send every app's traces to it")
    up.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _print_urls(stack: NativeStack, admin_token: str) -> None:
    """Print where everything is: this is the command's output, so plain print."""
    lines = ["", "devstack is up:"]
    for name, url in stack.urls.items():
        label = {"mlflow": "mlflow (UI, API)", "jaeger": "jaeger (query API)"}.get(name, name)
        lines.append(f"  {label:<18} {url}{_port_note(name, url, stack.ports)}")
    if stack.alertmanager is not None:
        # The URL itself may be a secret (Slack's are): say where alerts go without printing it.
        target = ("ALERT_WEBHOOK_URL" if stack.alert_webhook_url
                  else "this terminal (set ALERT_WEBHOOK_URL to send them on)")
        lines.append(f"  {'alerts go to':<18} {target}")
    lines.append(f"  {'admin token':<18} {admin_token}")
    if stack.mlflow is not None:
        login = stack.mlflow.client_env("admin")
        user, password = login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"]
        lines.append(f"  {'mlflow login':<18} {user} / {password}")
    lines.append(f"  {'work dir':<18} {stack.workdir} (logs under */logs; credentials in secrets.json)")
    if stack.skipped:
        lines.append(f"  {'skipped':<18} {', '.join(stack.skipped)} (not importable yet)")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def _port_note(name: str, url: str, wanted: dict[str, int | list[int]]) -> str:
    """Why a service is not on its README port: the port was busy (or, for 80, needs root)."""
    usual = wanted.get("ferretdb" if name == "mongo" else name)
    if not usual:
        return ""
    usual = [usual] if isinstance(usual, int) else list(usual)
    port = urlsplit(url).port
    if port == usual[0]:
        return ""
    busy = " and ".join(str(p) for p in usual if p != port)
    reason = "busy or needs root" if usual[0] < 1024 else "busy"
    return f"  ({busy} {reason}: took {port})"


def _watch(stack: NativeStack, stop: threading.Event) -> None:
    """Wait for a stop signal, warning once about each server that died meanwhile."""
    reported: set[str] = set()
    while not stop.wait(2.0):
        for server in stack.servers:
            if not server.running and server.name not in reported:
                reported.add(server.name)
                log.warning("%s has exited; see %s", server.name, server.log_path)


def up(args: argparse.Namespace) -> int:
    """Start the stack, print its URLs and wait for Ctrl-C/SIGTERM, then stop everything."""
    workdir = args.workdir.resolve()
    admin_token = os.environ.get("ADMIN_TOKEN") or load_or_create_secrets(workdir)["admin_token"]
    stop = threading.Event()
    started = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        if not started.is_set():
            # Abort a start-up in progress; NativeStack.start() stops what it started and re-raises.
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    stack = NativeStack(
        workdir,
        admin_token=admin_token,
        service_token=os.environ.get("SERVICE_TOKEN") or None,
        workers=args.workers,
        ports=None if args.random_ports else FIXED_PORTS,
        prometheus=not args.no_prometheus,
        alert_webhook_url=os.environ.get("ALERT_WEBHOOK_URL") or None,
        tracing=args.tracing,
    )
    try:
        stack.start()
        started.set()
        _print_urls(stack, admin_token)
        _watch(stack, stop)
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("devstack failed to start")
        return 1
    finally:
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "up":
        return up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
