"""A webhook receiver for Alertmanager's notifications, on a free loopback port, in a thread of this process.

`make dev` without ALERT_WEBHOOK_URL points Alertmanager at one that logs each notification (alerts show up in
the terminal); the alerting end-to-end test runs one and asserts on the notifications it kept.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from devstack.ports import LOOPBACK

log = logging.getLogger(__name__)

# Alertmanager's payloads are a few KB; anything far larger is not one of them.
_MAX_BODY = 1 << 20


class WebhookReceiver:
    """Keeps every JSON body POSTed to ``url`` (Alertmanager's webhook payload, version 4), in arrival order."""

    def __init__(self, *, log_alerts: bool = False, path: str = "/alerts") -> None:
        self.log_alerts = log_alerts
        self.path = path
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT/alerts, for Alertmanager's webhook_configs."""
        assert self._server is not None, "receiver not started"
        return f"http://{LOOPBACK}:{self._server.server_address[1]}{self.path}"

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """A copy of the payloads received so far."""
        with self._lock:
            return list(self._received)

    def _keep(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self._received.append(payload)
        if self.log_alerts:
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                log.warning(
                    "alert %s: %s %s (%s) %s; runbook %s",
                    alert.get("status"), labels.get("alertname"),
                    " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in {"alertname", "severity"}),
                    labels.get("severity", "no severity"), alert.get("annotations", {}).get("summary", ""),
                    alert.get("annotations", {}).get("runbook_url", "none"),
                )

    def start(self) -> Self:
        """Listen on a free loopback port and serve from a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != receiver.path or not 0 < length <= _MAX_BODY:
                    self.send_error(404 if self.path != receiver.path else 400)
                    return
                try:
                    payload = json.loads(self.rfile.read(length))
                except ValueError:
                    self.send_error(400, "not JSON")
                    return
                receiver._keep(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook: " + format, *args)

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-webhook", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
