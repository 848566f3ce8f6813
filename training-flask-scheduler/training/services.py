"""Training use cases: a training run, the promotion decision, rollback, retention, bootstrap. No Flask here."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pymongo.errors import PyMongoError
from sklearn.pipeline import Pipeline

from mlstack_core import tracing
from mlstack_core.data.generator import FEATURES
from mlstack_core.drift import REFERENCE_ARTIFACT, build_reference
from mlstack_core.jobs import JobService
from mlstack_core.locks import LeaseKeeper, MongoLease
from mlstack_core.model_files import ModelRefused
from mlstack_core.mongo import MongoProvider
from mlstack_core.registry_calls import CachedRead, RegistryUnavailable
from mlstack_core.rows import RowsRepository
from mlstack_core.service_errors import ServiceError
from training import metrics
from training.data import SOURCE_GENERATED, SOURCE_MONGODB, TrainingData, load_training_data
from training.model import METRICS, Split, build_pipeline, evaluate, fit, split_holdout
from training.nudge import ServingNudger
from training.promotion import (
    PROMOTED,
    REJECTED,
    ROLLBACK,
    PromotionRule,
    PromotionsRepository,
    decide,
    now,
    version_tags,
)
from training.registry import ModelRegistry, Version
from training.settings import TrainingSettings

logger = logging.getLogger(__name__)

LEASE_NAME = "training"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
CHALLENGER = "challenger"
BOOTSTRAP_RETRY_SECONDS = 5.0
T = TypeVar("T")


class TrainingError(RuntimeError):
    """A training run could not finish; the message says which step failed and that nothing was promoted."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        # What the run record shows clients: the step, never the registry's address or the exception text.
        self.public_message = public or message


@dataclass
class Lease:
    """The outcome of asking for the training lease: acquired, held (by someone else) or unavailable."""

    state: str
    lease: MongoLease | None = None

    def renew(self) -> None:
        """Extend the lease before a step that changes the registry; fail if another holder took it over."""
        if self.lease is None:
            return
        try:
            still_ours = self.lease.acquire()
        except PyMongoError as exc:
            logger.warning("training lease not renewed (MongoDB unavailable): %s", exc)
            return
        if not still_ours:
            raise TrainingError("the training lease expired and was taken by another process; nothing was promoted")


class TrainingService:
    """Trains, registers, decides promotion, nudges serving and applies retention."""

    def __init__(
        self,
        settings: TrainingSettings,
        *,
        registry: ModelRegistry,
        mongo: MongoProvider,
        nudger: ServingNudger,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.mongo = mongo
        self.nudger = nudger
        self.rule = PromotionRule(
            settings.promotion_metric, settings.promotion_min_improvement, settings.promotion_improvement_mode,
            allow_generated_over_real=settings.promotion_allow_generated_over_real,
        )
        # GET /model is read by dashboards and people: answered from the last read for a few seconds, and
        # from an older one (marked stale) while the registry does not answer within the request budget.
        self._status = CachedRead(
            self._read_status, ttl_seconds=settings.registry_cache_seconds,
            budget_seconds=settings.registry_request_seconds, step="read the model's aliases",
        )

    def _promotions(self) -> PromotionsRepository:
        return PromotionsRepository(self.mongo.db()[self.settings.promotions_collection])

    @contextlib.contextmanager
    def _lease(self) -> Iterator[Lease]:
        try:
            lease = MongoLease(self.mongo.db(), LEASE_NAME, ttl_seconds=self.settings.lease_ttl_seconds)
            acquired = lease.acquire()
        except PyMongoError as exc:
            # The leader process already runs one job at a time; only other replicas are not excluded now.
            logger.warning("training lease unavailable (MongoDB down), proceeding: %s", exc)
            yield Lease("unavailable")
            return
        if not acquired:
            yield Lease("held")
            return
        try:
            with LeaseKeeper(lease):  # renewed while held: a dead holder frees it within lease_ttl_seconds
                yield Lease("acquired", lease)
        finally:
            with contextlib.suppress(PyMongoError):
                lease.release()

    def _registry_step(self, step: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:
            raise TrainingError(
                f"MLflow at {self.registry.tracking_uri} failed during '{step}': {type(exc).__name__}: {exc}; "
                "nothing was promoted",
                public=f"MLflow unavailable during '{step}'; nothing was promoted",
            ) from exc

    # ------------------------------------------------------------------ training run

    def run(self, job_run_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        """One training run (the scheduled job); returns its summary, raises TrainingError when it fails."""
        started = time.perf_counter()
        with self._lease() as lease:
            if lease.state == "held":
                logger.info("another process holds the training lease; run %s skipped", job_run_id)
                tracing.annotate({"promotion.outcome": "skipped"})
                return {"outcome": "skipped", "lock": "held",
                        "reason": "another training run holds the lease; nothing was trained"}
            summary = self._train(job_run_id, lease, request_id or job_run_id)
        summary["duration_seconds"] = round(time.perf_counter() - started, 3)
        logger.info("training run %s: %s (%.2f s)", job_run_id, summary["outcome"], summary["duration_seconds"])
        return summary

    def _train(self, job_run_id: str, lease: Lease, request_id: str) -> dict[str, Any]:
        # Fail fast, before reading and fitting, when the registry is down.
        self._registry_step("connect", self.registry.aliases)
        data = self._load_data()
        split, model, challenger_metrics = self._fit(data)
        lease.renew()  # before the first registry write: only the lease holder may register and promote
        candidate = self._registry_step(
            "log and register the model",
            lambda: self.registry.log_candidate(
                model,
                input_example=split.x_train.head(5),
                params=self._params(data, split),
                metrics=challenger_metrics,
                tags={"data.source": data.source, "data.rows": str(data.rows), "job_run_id": job_run_id},
                run_name=f"training-{job_run_id[:8]}",
                # Serving measures input drift against the rows this version learned from.
                artifacts={REFERENCE_ARTIFACT: build_reference(split.x_train[list(FEATURES)].to_numpy(), FEATURES)},
            ),
        )
        self._registry_step("set the challenger alias", lambda: self.registry.set_alias(CHALLENGER, candidate.version))
        for name, value in challenger_metrics.items():
            metrics.MODEL_METRIC.labels(CHALLENGER, name).set(value)

        champion = self._registry_step("find the champion", lambda: self.registry.version_for_alias(CHAMPION))
        champion_metrics, champion_error, champion_gone = self._score_champion(champion, split)
        decision = decide(
            self.rule, challenger_metrics, champion_metrics,
            champion_version=champion.version if champion else None, champion_error=champion_error,
            champion_gone=champion_gone, challenger_source=data.source,
            champion_source=self.registry.data_source(champion) if champion else None,
        )
        record: dict[str, Any] = {
            "outcome": PROMOTED if decision.promote else REJECTED,
            "model_name": self.registry.model_name,
            "challenger_version": candidate.version,
            "champion_version": champion.version if champion else None,
            "metric": self.rule.metric,
            "rule": self.rule.describe(),
            "min_improvement": self.rule.min_improvement,
            "improvement_mode": self.rule.mode,
            "improvement": decision.improvement,
            "challenger_metrics": challenger_metrics,
            "champion_metrics": champion_metrics,
            "reason": decision.reason,
            "job_run_id": job_run_id,
            "mlflow_run_id": candidate.mlflow_run_id,
            "data_source": data.source,
            "data_rows": data.rows,
            "holdout_rows": len(split.x_holdout),
        }
        if decision.promote:
            self._registry_step("promote", lambda: self._promote(candidate.version, record["champion_version"]))
            record["previous_champion_version"] = record["champion_version"]
        record["decided_at"] = now()
        tracing.annotate({
            "model.name": record["model_name"], "model.version": candidate.version,
            "promotion.outcome": record["outcome"], "promotion.champion_version": record["champion_version"],
            "promotion.metric": self.rule.metric, "promotion.improvement": decision.improvement,
            "promotion.reason": decision.reason, "data.source": data.source, "data.rows": data.rows,
            "data.holdout_rows": record["holdout_rows"],
        })
        stored = self._record(candidate.version, record)
        metrics.PROMOTIONS.labels(record["outcome"]).inc()
        for name, value in (challenger_metrics if decision.promote else champion_metrics or {}).items():
            metrics.MODEL_METRIC.labels(CHAMPION, name).set(value)

        nudge = self.nudger.nudge(request_id) if decision.promote else None
        retention = self.apply_retention(protect={candidate.version})
        return {
            "outcome": record["outcome"],
            "lock": lease.state,
            "data": data.summary(),
            "model_version": candidate.version,
            "mlflow_run_id": candidate.mlflow_run_id,
            "metrics": challenger_metrics,
            "promotion": _public(record) | {"recorded_in_mongodb": stored},
            "serving_nudge": nudge,
            "retention": retention,
        }

    def _load_data(self) -> TrainingData:
        settings = self.settings
        data = load_training_data(
            RowsRepository(self.mongo.db()[settings.mongo_collection]),
            min_rows=settings.min_training_rows,
            fallback_rows=settings.fallback_rows,
            seed=settings.seed,
            read_timeout_seconds=settings.read_timeout_seconds,
        )
        metrics.DATA_ROWS.labels(data.source).set(data.rows)
        other = SOURCE_GENERATED if data.source == SOURCE_MONGODB else SOURCE_MONGODB
        metrics.DATA_ROWS.labels(other).set(0)
        if data.source == SOURCE_GENERATED:
            metrics.DATA_FALLBACKS.inc()
        return data

    def _fit(self, data: TrainingData) -> tuple[Split, Pipeline, dict[str, float]]:
        settings = self.settings
        split = split_holdout(data.frame, fraction=settings.holdout_fraction, seed=settings.seed)
        pipeline = build_pipeline(
            alpha=settings.alpha, l1_ratio=settings.l1_ratio, standardize=settings.standardize, seed=settings.seed
        )
        model = fit(pipeline, split)
        return split, model, evaluate(model, split.x_holdout, split.y_holdout)

    def _params(self, data: TrainingData, split: Split) -> dict[str, Any]:
        settings = self.settings
        return {
            "alpha": settings.alpha, "l1_ratio": settings.l1_ratio, "standardize": settings.standardize,
            "holdout_fraction": settings.holdout_fraction, "seed": settings.seed,
            "data_source": data.source, "data_rows": data.rows, "train_rows": len(split.x_train),
            "holdout_rows": len(split.x_holdout),
        }

    def _score_champion(
        self, champion: Version | None, split: Split
    ) -> tuple[dict[str, float] | None, str | None, bool]:
        """(metrics, why not scored, whether it is definitively unusable) of the champion on this run's holdout.

        Definitively unusable: the loader refuses it (not skops, a type off the allow-list: serving refuses it
        too), or the registry lists no files for it. Anything else (registry or S3 down) may pass.
        """
        if champion is None:
            return None, None, False
        try:
            model = self.registry.load(champion.version)
            return evaluate(model, split.x_holdout, split.y_holdout), None, False
        except ModelRefused as exc:
            logger.warning("champion version %s refused by the loader: %s", champion.version, exc)
            return None, f"the model loader refuses it: {exc}", True
        except Exception as exc:
            logger.warning("champion version %s could not be scored: %s", champion.version, exc)
            error = f"loading it failed: {type(exc).__name__}"
        try:
            if self.registry.files_gone(champion.version):
                return None, "its model files are gone from the artifact store", True
        except Exception as exc:
            logger.warning("whether champion version %s's files are gone is unknown: %s", champion.version, exc)
        return None, error, False

    def _promote(self, new: str, old: str | None) -> None:
        """champion -> new, previous_champion -> old; on failure previous_champion is put back."""
        before = self.registry.aliases().get(PREVIOUS_CHAMPION)
        if old is not None and old != new:
            self.registry.set_alias(PREVIOUS_CHAMPION, old)
        try:
            self.registry.set_alias(CHAMPION, new)
        except Exception:
            if before is not None and old is not None:
                with contextlib.suppress(Exception):
                    self.registry.set_alias(PREVIOUS_CHAMPION, before)
            raise

    def _record(self, version: str, record: dict[str, Any]) -> bool:
        """Tags on the version and a document in ``promotions``; both best effort once the aliases are set."""
        try:
            self.registry.tag_version(version, version_tags(record))
        except Exception as exc:
            logger.warning("promotion tags not set on version %s: %s", version, exc)
        return self._promotions().record(record)

    # ------------------------------------------------------------------ rollback

    def rollback(self, request_id: str | None) -> dict[str, Any]:
        """Move champion back to previous_champion (the former champion becomes previous_champion)."""
        with self._lease() as lease:
            if lease.state == "held":
                raise ServiceError("TRAINING_IN_PROGRESS",
                               "A training run holds the lease and may be promoting; retry the rollback shortly.")
            try:
                aliases = self.registry.aliases()
                current, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)
                if previous is None or previous == current:
                    raise ServiceError("NO_PREVIOUS_CHAMPION",
                        f"There is no previous_champion to roll back to (champion is version {current}); "
                        "nothing was changed.",
                    )
                self.registry.set_alias(CHAMPION, previous)
                if current is not None:
                    self.registry.set_alias(PREVIOUS_CHAMPION, current)
                restored = self.registry.version_for_alias(CHAMPION)
            except ServiceError:
                raise
            except Exception as exc:
                logger.warning("rollback failed: %s", exc)
                raise ServiceError("REGISTRY_UNAVAILABLE",
                    f"The model registry could not complete the rollback ({type(exc).__name__}); retry later.",
                ) from exc
        record = {
            "outcome": ROLLBACK,
            "model_name": self.registry.model_name,
            "champion_version": previous,
            "previous_champion_version": current,
            "reason": f"manual rollback: champion moved from version {current} back to version {previous}",
            "decided_at": now(),
            "job_run_id": request_id,
        }
        self._status.invalidate()
        stored = self._record(previous, record)
        metrics.PROMOTIONS.labels(ROLLBACK).inc()
        self._champion_gauges_from_tags(restored)
        nudge = self.nudger.nudge(request_id)
        return _public(record) | {"recorded_in_mongodb": stored, "serving_nudge": nudge}

    def _champion_gauges_from_tags(self, version: Version | None) -> None:
        # The restored champion was scored when it was trained; its own tags are the best numbers there are.
        if version is None:
            return
        try:
            recorded = json.loads(version.tags.get("promotion.challenger_metrics", "{}"))
        except ValueError:
            return
        for name in METRICS:
            if isinstance(recorded.get(name), int | float):
                metrics.MODEL_METRIC.labels(CHAMPION, name).set(float(recorded[name]))

    # ------------------------------------------------------------------ reads

    def promotions(self, n: int) -> list[dict[str, Any]]:
        """The latest n decisions."""
        return self._promotions().latest(n)

    def model_status(self) -> dict[str, Any]:
        """Which versions hold the aliases, with their recorded decision; ``stale`` when the registry is down."""
        try:
            cached = self._status.get()
        except RegistryUnavailable as exc:
            raise ServiceError("REGISTRY_UNAVAILABLE", f"{str(exc).capitalize()}; retry later.") from exc
        return cached.value | {"read_at": cached.read_at.isoformat(), "stale": cached.stale}

    def _read_status(self) -> dict[str, Any]:
        aliases = self.registry.aliases()
        versions = {alias: self.registry.version_for_alias(alias) for alias in aliases}
        return {
            "model_name": self.registry.model_name,
            "aliases": {
                alias: {
                    "version": v.version,
                    "run_id": v.run_id,
                    "created_at": v.created_at.isoformat(),
                    "promotion": {k.removeprefix("promotion."): t for k, t in v.tags.items()
                                  if k.startswith("promotion.")},
                }
                for alias, v in versions.items() if v is not None
            },
            "rule": self.rule.describe(),
        }

    # ------------------------------------------------------------------ retention

    def apply_retention(self, *, protect: Iterable[str] = ()) -> dict[str, Any]:
        """Delete versions beyond RETENTION_KEEP_VERSIONS or older than RETENTION_MAX_AGE_DAYS, never aliased ones.

        Never raises: a version that cannot be deleted now is tried again after the next run.
        """
        settings = self.settings
        protected = set(protect)
        try:
            versions = self.registry.versions()
            aliased = set(self.registry.aliases().values())
        except Exception as exc:
            metrics.RETENTION_FAILURES.inc()
            logger.warning("retention skipped, registry unavailable: %s", exc)
            return {"deleted": [], "errors": [f"registry unavailable: {type(exc).__name__}"]}
        cutoff = None
        if settings.retention_max_age_days > 0:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.retention_max_age_days)
        doomed = [
            v for i, v in enumerate(versions)  # newest first
            if v.version not in aliased and v.version not in protected
            and (i >= settings.retention_keep_versions or (cutoff is not None and v.created_at < cutoff))
        ]
        deleted, errors = [], []
        for version in doomed:
            try:
                uri = self.registry.delete_version(version)
            except Exception as exc:
                metrics.RETENTION_FAILURES.inc()
                logger.warning("retention could not delete version %s: %s", version.version, exc)
                errors.append(f"version {version.version}: {type(exc).__name__}")  # the log has the details
                continue
            metrics.VERSIONS_DELETED.inc()
            logger.info("retention deleted version %s and its files at %s", version.version, uri)
            deleted.append({"version": version.version, "artifacts": uri})
        return {"deleted": deleted, "errors": errors, "kept": len(versions) - len(deleted)}

    # ------------------------------------------------------------------ bootstrap

    def bootstrap(self, jobs: JobService, *, stop: threading.Event) -> None:
        """On the leader at start: while no champion exists, queue training runs (bounded by the timeout)."""
        deadline = time.monotonic() + self.settings.bootstrap_timeout_seconds
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                champion = self.registry.version_for_alias(CHAMPION)
            except Exception as exc:
                logger.info("bootstrap: registry not reachable yet (%s); retrying", type(exc).__name__)
                stop.wait(BOOTSTRAP_RETRY_SECONDS)
                continue
            if champion is not None:
                logger.info("bootstrap: champion is version %s, nothing to do", champion.version)
                return
            run = jobs.request_run()
            logger.info("bootstrap: no champion yet, queued training run %s", run["run_id"])
            final = jobs.wait_for(run["run_id"], max(deadline - time.monotonic(), 1.0)) or {}
            if (final.get("result") or {}).get("outcome") != PROMOTED:
                # Failed, or skipped because another replica holds the lease and is training: look again later.
                stop.wait(BOOTSTRAP_RETRY_SECONDS)
        if not stop.is_set():
            logger.warning("bootstrap gave up after %.0f s without a champion; the schedule will retry",
                           self.settings.bootstrap_timeout_seconds)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in record.items() if k != "_id"}

