"""`make dev` (= `python -m devstack up`): the whole native stack, Prometheus and Alertmanager included, up and down
by signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from devstack.polling import wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180


def test_devstack_up_serves_every_service_and_prometheus_scrapes_them(tmp_path: Path) -> None:
    """On the README's ports where they are free; the ETL's (5554) is held busy here, and the output says so."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts"), "SEED_ROWS": "20"}
    busy = socket.socket()
    busy.bind(("127.0.0.1", 5554))  # fails if something else holds it: then this test cannot say what it checks
    busy.listen()
    for key in ("ADMIN_TOKEN", "SERVICE_TOKEN", "MONGO_URI", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                "ALERT_WEBHOOK_URL"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", "--workdir", str(tmp_path / "stack"), "--workers", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("Press Ctrl-C"):
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(START_TIMEOUT), "devstack did not come up:\n" + "".join(output[-40:])
        urls = dict(re.findall(r"^\s{2}(\S+)\s+(http://\S+)", "".join(output), re.MULTILINE))
        for name in ("serving", "etl", "training", "prometheus", "alertmanager"):
            assert name in urls, f"{name} missing from the printed URLs: {urls}"
        printed = "".join(output)
        assert urlsplit(urls["etl"]).port != 5554 and "(5554 busy: took" in printed, printed
        assert re.search(r"^\s+alerts go to\s+this terminal", printed, re.MULTILINE), printed
        for name, port in (("training", 5555), ("prometheus", 9090), ("alertmanager", 9093)):
            if f"({port} busy" not in printed:  # another program on this machine may hold one
                assert urlsplit(urls[name]).port == port, (name, urls[name])
        for name in ("serving", "etl", "training"):
            assert requests.get(f"{urls[name]}/health", timeout=10).status_code == 200

        def all_up() -> dict[str, str] | None:
            body = requests.get(f"{urls['prometheus']}/api/v1/query", params={"query": "up"}, timeout=10).json()
            jobs = {r["metric"]["job"]: r["value"][1] for r in body["data"]["result"]}
            wanted = {"serving", "etl", "training", "prometheus"}
            return jobs if wanted <= set(jobs) and all(jobs[j] == "1" for j in wanted) else None

        wait_until(all_up, 60, "Prometheus to scrape every app", interval=1)
        rules = requests.get(f"{urls['prometheus']}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert rules, "the repository's rule files are loaded"

        def alertmanagers() -> list[str]:
            body = requests.get(f"{urls['prometheus']}/api/v1/alertmanagers", timeout=10).json()
            return [am["url"] for am in body["data"]["activeAlertmanagers"]]

        assert wait_until(alertmanagers, 30, "Prometheus to know the Alertmanager") == [
            f"{urls['alertmanager']}/api/v2/alerts"]
        assert requests.get(f"{urls['alertmanager']}/-/ready", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout=10)
        reader.join(timeout=10)
        busy.close()
    assert code == 0, "".join(output[-40:])
