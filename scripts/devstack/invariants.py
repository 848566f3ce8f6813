"""What must hold after any fault, read directly from the database, the registry, the bucket and the logs.

The invariants (issue #10, "A fault suite"):

1. **Exactly one prediction per finished row.** Every row without a pending mark has a prediction whose
   ``_id`` is the row's ``_id``, and no other prediction document carries the same ``row_id``.
2. **No row is lost.** No row has neither a pending mark nor a prediction. (Observed as the rows of 1 that
   have no prediction at all; reported on their own, apart from duplicates.)
3. **No run left running.** No run record (MongoDB ``job_runs``, and the run files in each app's STATE_DIR if
   the service keeps any) still says "running" once the system had time to finish or fail it.
4. **Retention holds.** Every registered version beyond the newest RETENTION_KEEP_VERSIONS holds an alias.
5. **No files of deleted versions.** No object in the artifact bucket belongs to a version that was deleted:
   neither under the folder of a version seen earlier and gone now, nor under a logged model whose entity was
   deleted. (A logged model whose registration never happened is counted, not flagged: it is no version.)
6. **No worker timeout.** No ``WORKER TIMEOUT`` line in any Gunicorn log of the stack.

:meth:`InvariantChecker.settle` gives the system its chance first: it waits for runs in flight, then asks
for one more ETL run (which backfills pending rows and, where the service sweeps, re-sends orphans).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from devstack.faults import request_run, wait_run
from devstack.stack import MODEL_NAME, NativeStack

log = logging.getLogger(__name__)

ROWS_COLLECTION = "dummy_col_demo"
PREDICTIONS_COLLECTION = "predictions"
RUNS_COLLECTION = "job_runs"
WORKER_TIMEOUT = "WORKER TIMEOUT"
# The folder MLflow 3 gives a logged model in the artifact store: <experiment>/models/<model id>/...
_MODEL_FOLDER = re.compile(r"^(?:.*/)?models/(m-[0-9a-f]+)/")
# How many ids one $in query carries (FerretDB answers large $in lists slowly).
_CHUNK = 2000


@dataclass
class Violation:
    """One broken invariant: its number and name, how many things break it, and a few of them."""

    invariant: str
    count: int
    examples: list[Any]

    def __str__(self) -> str:
        return f"{self.invariant}: {self.count} (e.g. {self.examples[:5]})"


@dataclass
class Report:
    """The outcome of one check: what was counted, and every violation found."""

    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no invariant is broken."""
        return not self.violations

    def add(self, invariant: str, found: Iterable[Any]) -> None:
        """Record a violation when `found` is not empty."""
        items = list(found)
        if items:
            self.violations.append(Violation(invariant, len(items), [str(i) for i in items[:10]]))

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        state = "all invariants hold" if self.ok else "; ".join(str(v) for v in self.violations)
        return f"{state} ({self.figures})"


def check_rows(
    db: Any, report: Report, *, rows_collection: str = ROWS_COLLECTION,
    predictions_collection: str = PREDICTIONS_COLLECTION,
) -> None:
    """Invariants 1 and 2 on one database (rows, their pending marks, the predictions), added to report."""
    rows = db[rows_collection]
    pending = {doc["_id"] for doc in db[f"{rows_collection}_pending"].find({}, {"_id": 1})}
    row_ids = [doc["_id"] for doc in rows.find({}, {"_id": 1})]
    predicted: set[Any] = set()
    row_id_count: collections.Counter[str] = collections.Counter()
    wrong_id: list[str] = []
    for doc in db[predictions_collection].find({}, {"_id": 1, "row_id": 1}, batch_size=10_000):
        row_id = doc.get("row_id")
        if row_id is None:
            continue  # an anonymous prediction: no row of ours
        row_id_count[str(row_id)] += 1
        if str(doc["_id"]) != str(row_id):
            wrong_id.append(f"{doc['_id']} carries row_id {row_id}")
        predicted.add(str(doc["_id"]))
    finished = [row_id for row_id in row_ids if row_id not in pending]
    lost = [row_id for row_id in finished if str(row_id) not in predicted]
    duplicated = [row_id for row_id, n in row_id_count.items() if n > 1]
    # Marks whose row was never written (an insert cut short) are skipped and expire: counted, not flagged.
    report.figures.update(rows=len(row_ids), pending=len(pending), row_predictions=sum(row_id_count.values()),
                          marks_without_row=len(pending - set(row_ids)))
    report.add("1 unmarked row without its one prediction (duplicate row_id or other _id)",
               duplicated + wrong_id)
    report.add("2 row with neither pending mark nor prediction", lost)


def running_runs(db: Any) -> list[str]:
    """Invariant 3 in MongoDB: the run records (job and id) that still say "running"."""
    running = db[RUNS_COLLECTION].find({"status": "running"}, {"_id": 1, "job": 1})
    return [f"{doc.get('job')} {doc['_id']}" for doc in running]


class InvariantChecker:
    """Checks a NativeStack's invariants; keep one per stack, it remembers the versions it has seen."""

    def __init__(
        self,
        stack: NativeStack,
        *,
        retention_keep: int,
        model_name: str = MODEL_NAME,
        rows_collection: str = ROWS_COLLECTION,
        predictions_collection: str = PREDICTIONS_COLLECTION,
        registry_client: Any = None,
    ) -> None:
        self.stack = stack
        self.retention_keep = retention_keep
        self.model_name = model_name
        self.rows_collection = rows_collection
        self.predictions_collection = predictions_collection
        self._registry = registry_client
        # version -> the artifact folder (bucket key prefix) it had when last seen.
        self._seen_versions: dict[str, str] = {}

    # ------------------------------------------------------------------ settling

    def settle(self, *, etl_run: bool = True, timeout: float = 180.0) -> dict[str, Any]:
        """Give the system its chance to finish: runs in flight end, then one more ETL run backfills/sweeps."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(AssertionError):
            self._wait_no_running(deadline)
        outcome: dict[str, Any] = {}
        if etl_run and "etl" in self.stack.apps:
            run_id = request_run(self.stack, "etl")
            record = wait_run(self.stack, "etl", run_id, timeout=max(deadline - time.monotonic(), 30.0))
            outcome = {"settle_run": run_id, "status": record["status"],
                       "result": record.get("result"), "error": record.get("error")}
        return outcome

    def _wait_no_running(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self._running_runs():
                return
            time.sleep(0.5)
        raise AssertionError("runs still running")

    # ------------------------------------------------------------------ the check

    def check(self, *, wait_seconds: float = 15.0) -> Report:
        """Check every invariant; while some fail, look again for up to wait_seconds (writes still landing)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            report = self._check_once()
            if report.ok or time.monotonic() >= deadline:
                log.info("invariants: %s", report.summary())
                return report
            time.sleep(1.0)

    def _check_once(self) -> Report:
        report = Report()
        with contextlib.closing(self.stack.ferretdb.client(socketTimeoutMS=60_000)) as client:  # type: ignore[union-attr]
            db = client[self.stack.mongo_db]
            self._check_rows(db, report)
            running = self._running_runs(db)
        report.figures["runs_running"] = len(running)
        report.add("3 run left running", running)
        self._check_registry(report)
        self._check_logs(report)
        return report

    def _check_rows(self, db: Any, report: Report) -> None:
        check_rows(db, report, rows_collection=self.rows_collection,
                   predictions_collection=self.predictions_collection)

    def _running_runs(self, db: Any = None) -> list[str]:
        if db is None:
            with contextlib.closing(self.stack.ferretdb.client()) as client:  # type: ignore[union-attr]
                return self._running_runs(client[self.stack.mongo_db])
        found = running_runs(db)
        for app in self.stack.apps.values():
            runs_dir = app.state_dir / "runs"
            for path in sorted(runs_dir.glob("*.json")) if runs_dir.is_dir() else []:
                with contextlib.suppress(OSError, ValueError):
                    record = json.loads(path.read_text())
                    if record.get("status") == "running" and f"{record.get('job')} {record.get('run_id')}" not in found:
                        found.append(f"{record.get('job')} {record.get('run_id')} (file)")
        return found

    # ------------------------------------------------------------------ registry and bucket

    def registry(self) -> Any:
        """An MlflowClient on the stack's tracking server."""
        if self._registry is None:
            from mlflow import MlflowClient

            self._registry = MlflowClient(self.stack.mlflow_uri)
        return self._registry

    def _check_registry(self, report: Report) -> None:
        from mlflow.exceptions import MlflowException

        client = self.registry()
        try:
            versions = sorted(client.search_model_versions(f"name='{self.model_name}'"),
                              key=lambda mv: int(mv.version), reverse=True)
            aliases = set(client.get_registered_model(self.model_name).aliases.values()) if versions else set()
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                versions, aliases = [], set()
            else:
                raise
        beyond = [mv.version for mv in versions[self.retention_keep:] if mv.version not in aliases]
        report.figures["versions"] = len(versions)
        report.add(f"4 version beyond RETENTION_KEEP_VERSIONS={self.retention_keep} without an alias", beyond)

        live_models = {
            mv.source.removeprefix("models:/") for mv in versions if (mv.source or "").startswith("models:/")
        }
        current: dict[str, str] = {}
        for mv in versions:
            uri = client.get_model_version_download_uri(self.model_name, mv.version)
            current[mv.version] = uri.removeprefix("mlflow-artifacts:").lstrip("/")
        keys = self._bucket_keys()
        report.figures["bucket_objects"] = len(keys)

        leftovers: list[str] = []
        for version, prefix in self._seen_versions.items():
            if version not in current:
                found = [key for key in keys if key.startswith(prefix.rstrip("/") + "/")]
                leftovers += [f"v{version}: {key}" for key in found[:3]]
        unregistered = 0
        for model_id in sorted({m.group(1) for key in keys if (m := _MODEL_FOLDER.match(key))} - live_models):
            if self._logged_model_deleted(model_id):
                leftovers.append(f"deleted logged model {model_id}")
            else:
                unregistered += 1
        report.figures["unregistered_logged_models"] = unregistered
        report.add("5 bucket objects of a deleted version", leftovers)
        self._seen_versions.update(current)

    def _logged_model_deleted(self, model_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            model = self.registry().get_logged_model(model_id)
        except MlflowException as exc:
            return "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower()
        status = str(getattr(model, "status", "")).upper()
        return "DELETED" in status

    def _bucket_keys(self) -> list[str]:
        s3 = self.stack.s3
        mlflow = self.stack.mlflow
        assert s3 is not None and mlflow is not None
        client = s3.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=mlflow.bucket):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    # ------------------------------------------------------------------ logs

    def _check_logs(self, report: Report) -> None:
        hits: list[str] = []
        for app in self.stack.apps.values():
            with contextlib.suppress(OSError):
                for line in app.log_path.read_text(errors="replace").splitlines():
                    if WORKER_TIMEOUT in line:
                        hits.append(f"{app.name}: {line.strip()[:160]}")
        report.add("6 WORKER TIMEOUT in a Gunicorn log", hits)
