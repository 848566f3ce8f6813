"""Unit tests of the training service: promotion rule, settings, data fallback, model, auth and JSON errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mlstack_core.data.generator import FEATURES, TARGET, generate_frame
from mlstack_core.settings import SettingsError, load_settings
from training import metrics
from training.data import SOURCE_GENERATED, SOURCE_MONGODB, load_training_data
from training.model import build_pipeline, evaluate, fit, split_holdout
from training.nudge import ServingNudger
from training.promotion import PromotionRule, decide, version_tags
from training.settings import TrainingSettings

# ----------------------------------------------------------------------------------------------- promotion rule


def _m(mae: float = 0.6, rmse: float = 0.8, r2: float = 0.2) -> dict[str, float]:
    return {"mae": mae, "rmse": rmse, "r2": r2}


@pytest.mark.parametrize(
    ("rule", "challenger", "champion", "promote"),
    [
        # lower is better for mae/rmse; the default margin 0 means strictly better
        (PromotionRule("mae"), _m(mae=0.59), _m(mae=0.60), True),
        (PromotionRule("mae"), _m(mae=0.60), _m(mae=0.60), False),
        (PromotionRule("mae"), _m(mae=0.61), _m(mae=0.60), False),
        (PromotionRule("rmse"), _m(rmse=0.70), _m(rmse=0.80), True),
        (PromotionRule("rmse"), _m(rmse=0.90, mae=0.1), _m(rmse=0.80, mae=0.9), False),
        # higher is better for r2
        (PromotionRule("r2"), _m(r2=0.25), _m(r2=0.20), True),
        (PromotionRule("r2"), _m(r2=0.15), _m(r2=0.20), False),
        (PromotionRule("r2"), _m(r2=-0.5), _m(r2=-0.6), True),
        # absolute margin: must win by MORE than the margin
        (PromotionRule("mae", 0.05), _m(mae=0.54), _m(mae=0.60), True),
        (PromotionRule("mae", 0.05), _m(mae=0.56), _m(mae=0.60), False),
        (PromotionRule("r2", 0.05), _m(r2=0.26), _m(r2=0.20), True),
        (PromotionRule("r2", 0.05), _m(r2=0.24), _m(r2=0.20), False),
        # relative margin: a fraction of the champion's value
        (PromotionRule("mae", 0.04, "relative"), _m(mae=0.57), _m(mae=0.60), True),  # 5 % better
        (PromotionRule("mae", 0.06, "relative"), _m(mae=0.57), _m(mae=0.60), False),
        (PromotionRule("r2", 0.10, "relative"), _m(r2=0.23), _m(r2=0.20), True),  # 15 % better
        (PromotionRule("r2", 0.10, "relative"), _m(r2=0.21), _m(r2=0.20), False),
        # a huge margin rejects everything
        (PromotionRule("mae", 1e6), _m(mae=0.01), _m(mae=0.60), False),
    ],
)
def test_promotion_rule(rule: PromotionRule, challenger: dict, champion: dict, promote: bool) -> None:
    decision = decide(rule, challenger, champion, champion_version="3")
    assert decision.promote is promote
    assert "version 3" in decision.reason
    assert decision.improvement is not None


def test_no_champion_promotes() -> None:
    decision = decide(PromotionRule("mae", 1e6), _m(), None)
    assert decision.promote
    assert "no champion" in decision.reason


def test_an_unscorable_champion_is_replaced_only_when_its_files_are_gone() -> None:
    error = "loading it failed: ConnectionError"
    kept = decide(PromotionRule(), _m(), None, champion_version="2", champion_error=error)
    assert not kept.promote
    assert "could not be scored" in kept.reason and "ConnectionError" in kept.reason and "kept" in kept.reason
    gone = "its model files are gone from the artifact store"
    replaced = decide(PromotionRule(), _m(), None, champion_version="2", champion_error=gone, champion_gone=True)
    assert replaced.promote and "files are gone" in replaced.reason and "cannot be used" in replaced.reason


@pytest.mark.parametrize(
    ("challenger_source", "champion_source", "allowed", "promote"),
    [
        ("generated", "mongodb", False, False),
        ("generated", None, False, False),  # unknown source: treated as database rows
        ("generated", "generated", False, True),
        ("mongodb", "generated", False, True),
        ("mongodb", "mongodb", False, True),
        ("generated", "mongodb", True, True),
    ],
)
def test_generated_rows_never_replace_database_rows_unless_allowed(
    challenger_source: str, champion_source: str | None, allowed: bool, promote: bool
) -> None:
    rule = PromotionRule(allow_generated_over_real=allowed)
    decision = decide(rule, _m(mae=0.1), _m(mae=0.9), champion_version="4",
                      challenger_source=challenger_source, champion_source=champion_source)
    assert decision.promote is promote
    if not promote:
        assert "generated rows" in decision.reason and "PROMOTION_ALLOW_GENERATED_OVER_REAL" in decision.reason
    # the rule applies before the files check: a gone champion trained on database rows is not replaced either
    gone = decide(rule, _m(), None, champion_version="4", champion_gone=True,
                  challenger_source=challenger_source, champion_source=champion_source)
    assert gone.promote is promote


def test_non_finite_challenger_is_rejected() -> None:
    assert not decide(PromotionRule(), _m(mae=math.nan), None).promote


def test_relative_rule_with_a_zero_champion() -> None:
    rule = PromotionRule("r2", 0.5, "relative")
    assert decide(rule, _m(r2=0.1), _m(r2=0.0), champion_version="1").promote
    assert not decide(rule, _m(r2=0.0), _m(r2=0.0), champion_version="1").promote


def test_rule_describes_itself() -> None:
    assert PromotionRule("mae").describe().startswith("mae (lower is better) must improve by more than 0; ")
    assert PromotionRule("mae", allow_generated_over_real=True).describe() == (
        "mae (lower is better) must improve by more than 0"
    )
    assert "higher is better" in PromotionRule("r2", 0.1, "relative").describe()
    assert "relative" in PromotionRule("r2", 0.1, "relative").describe()


def test_version_tags_hold_the_decision() -> None:
    import datetime as dt

    record = {
        "outcome": "rejected", "reason": "worse", "decided_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "metric": "mae", "champion_version": "1", "challenger_metrics": _m(mae=0.7), "champion_metrics": _m(),
    }
    tags = version_tags(record)
    assert tags["promotion.outcome"] == "rejected"
    assert tags["promotion.champion_version"] == "1"
    assert '"mae": 0.7' in tags["promotion.challenger_metrics"]
    assert all(isinstance(v, str) for v in tags.values())


# ----------------------------------------------------------------------------------------------- settings


def test_settings_defaults_and_original_names() -> None:
    settings = load_settings(TrainingSettings, {"ADMIN_TOKEN": "a-real-admin-token-0123456789"})
    assert settings.training_interval_seconds == 3600
    assert (settings.alpha, settings.l1_ratio, settings.standardize) == (0.5, 0.01, False)
    assert settings.model_name == "sk-learn-linear-reg-model"
    assert settings.load_model_api == "http://serving-nginx/loadModel/"
    assert settings.serving_token() == "a-real-admin-token-0123456789"  # defaults to ADMIN_TOKEN
    settings = load_settings(
        TrainingSettings,
        {"ADMIN_TOKEN": "a-real-admin-token-0123456789", "LOADMODELAPI": "http://serving:8000/loadModel/",
         "SERVING_ADMIN_TOKEN": "serving-admin-token-0123456789", "TRAINING_INTERVAL_SECONDS": "60"},
    )
    assert settings.load_model_api == "http://serving:8000/loadModel/"
    assert settings.serving_token() == "serving-admin-token-0123456789"
    assert settings.training_interval_seconds == 60


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"PROMOTION_METRIC": "accuracy"}, "PROMOTION_METRIC"),
        ({"TRAINING_HOLDOUT_FRACTION": "0"}, "HOLDOUT_FRACTION"),
        ({"TRAINING_INTERVAL_SECONDS": "1"}, "TRAINING_INTERVAL_SECONDS"),
        ({"RETENTION_KEEP_VERSIONS": "0"}, "RETENTION_KEEP_VERSIONS"),
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(TrainingSettings, {"ADMIN_TOKEN": "a-real-admin-token-0123456789", **overrides})


# ----------------------------------------------------------------------------------------------- data


class _FakeRows:
    def __init__(self, n: int) -> None:
        frame = generate_frame(n, seed=3)
        self._features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
        self._quality = frame[TARGET].to_numpy(dtype=np.float64)

    def labelled_arrays(self, **_: Any) -> tuple[np.ndarray, np.ndarray, int]:
        return self._features, self._quality, 2


def test_unreachable_mongodb_falls_back_to_generated_rows() -> None:
    from pymongo import MongoClient

    from mlstack_core.rows import RowsRepository

    client = MongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=200, connect=False)
    try:
        data = load_training_data(
            RowsRepository(client["db"]["rows"]), min_rows=50, fallback_rows=300, seed=1, read_timeout_seconds=5
        )
    finally:
        client.close()
    assert data.source == SOURCE_GENERATED
    assert data.rows == 300
    assert "unreachable" in data.reason
    assert data.mongodb_rows is None
    assert list(data.frame.columns) == [*FEATURES, TARGET]


def test_too_few_labelled_rows_fall_back_to_generated_rows() -> None:
    data = load_training_data(_FakeRows(10), min_rows=50, fallback_rows=200, seed=1, read_timeout_seconds=5)
    assert data.source == SOURCE_GENERATED
    assert data.rows == 200
    assert data.mongodb_rows == 10
    assert "fewer than MIN_TRAINING_ROWS=50" in data.reason


def test_enough_labelled_rows_come_from_mongodb() -> None:
    data = load_training_data(_FakeRows(120), min_rows=50, fallback_rows=200, seed=1, read_timeout_seconds=5)
    assert data.source == SOURCE_MONGODB
    assert data.rows == 120
    assert data.summary()["skipped_rows"] == 2
    assert list(data.frame.columns) == [*FEATURES, TARGET]


# ----------------------------------------------------------------------------------------------- model


def test_pipeline_is_the_original_elasticnet_fitted_on_named_columns() -> None:
    split = split_holdout(generate_frame(500, seed=5), fraction=0.2, seed=7)
    model = fit(build_pipeline(alpha=0.5, l1_ratio=0.01, standardize=False, seed=7), split)
    assert [name for name, _ in model.steps] == ["model"]
    assert list(model.feature_names_in_) == list(FEATURES)
    assert (model.named_steps["model"].alpha, model.named_steps["model"].l1_ratio) == (0.5, 0.01)
    assert len(split.x_holdout) == 100
    scores = evaluate(model, split.x_holdout, split.y_holdout)
    assert set(scores) == {"rmse", "mae", "r2"} and scores["rmse"] >= scores["mae"] > 0
    again = split_holdout(generate_frame(500, seed=5), fraction=0.2, seed=7)
    assert list(again.x_holdout.index) == list(split.x_holdout.index)  # seeded: the same holdout rows


def test_scaler_is_optional_and_scoring_follows_the_models_column_order() -> None:
    frame = generate_frame(300, seed=2)
    split = split_holdout(frame, fraction=0.2, seed=1)
    scaled = fit(build_pipeline(alpha=0.01, l1_ratio=0.5, standardize=True, seed=1), split)
    assert [name for name, _ in scaled.steps] == ["scaler", "model"]
    reversed_cols = list(reversed(FEATURES))
    other = build_pipeline(alpha=0.01, l1_ratio=0.5, standardize=True, seed=1).fit(
        split.x_train[reversed_cols], split.y_train
    )
    # A champion fitted on another column order is still scored on the right columns (same fit up to the
    # solver's coordinate order; sklearn would refuse mismatched names outright).
    assert evaluate(other, split.x_holdout, split.y_holdout) == pytest.approx(
        evaluate(scaled, split.x_holdout, split.y_holdout), rel=1e-3
    )


# ----------------------------------------------------------------------------------------------- serving nudge


def test_nudge_failure_is_counted_not_raised() -> None:
    before = metrics.NUDGE_FAILURES._value.get()
    result = ServingNudger("http://127.0.0.1:1/loadModel/", token="t" * 20, timeout=1, retries=0).nudge("rid")
    assert result["ok"] is False and "unreachable" in result["error"]
    assert metrics.NUDGE_FAILURES._value.get() == before + 1


# ----------------------------------------------------------------------------------------------- HTTP


STATE_CHANGING = [
    ("post", "/jobs/training/run"),
    ("get", "/manualTraining/"),
    ("put", "/jobs/training"),
    ("post", "/modifyTrainingJob/"),
    ("post", "/jobs/training/pause"),
    ("get", "/pauseTrainingJob/"),
    ("post", "/jobs/training/resume"),
    ("get", "/resumeTrainingJob/"),
    ("post", "/model/rollback"),
]


@pytest.mark.parametrize(("method", "path"), STATE_CHANGING)
def test_state_changing_endpoints_need_the_admin_token(client, method: str, path: str) -> None:
    response = getattr(client, method)(path, json={"minutes": 5})
    assert response.status_code == 401
    assert response.get_json()["error_code"] == "AUTH_REQUIRED"
    response = getattr(client, method)(path, json={"minutes": 5}, headers={"Authorization": "Bearer wrong-token"})
    assert response.status_code == 403
    assert response.get_json()["error_code"] == "AUTH_INVALID"


def test_index_lists_the_original_endpoints(client) -> None:
    body = client.get("/").get_json()
    assert body["service"] == "training"
    listed = " ".join(body["endpoints"])
    for path in ("/modifyTrainingJob/", "/getTrainingJob/", "/pauseTrainingJob/", "/resumeTrainingJob/",
                 "/manualTraining/", "/promotions", "/model/rollback"):
        assert path in listed
    assert "/dir/" not in listed
    assert client.get("/dir/").status_code == 404


@pytest.mark.parametrize(
    "body",
    [{"seconds": 1}, {"trigger": "cron", "cron": "not a cron"}, {"minutes": 5, "func": "os.system"}, [1, 2]],
)
def test_schedule_changes_are_validated_before_anything_is_stored(client, admin, body: Any) -> None:
    response = client.post("/modifyTrainingJob/", json=body, headers=admin)
    assert response.status_code in {400, 422}
    assert response.get_json()["error_code"] in {"INVALID_SCHEDULE", "INVALID_BODY"}


def test_valid_schedule_change_reaches_the_database(client, admin) -> None:
    response = client.put("/jobs/training", json={"trigger": "interval", "hours": 2}, headers=admin)
    assert response.status_code == 503  # validated, then MongoDB (unreachable here) was asked to store it
    assert response.get_json()["error_code"] == "DATABASE_UNAVAILABLE"


def test_default_schedule_is_hourly(app) -> None:
    assert app.extensions["job_service"].job.default_schedule.total_seconds() == 3600


def test_manual_run_with_mongodb_down_is_a_clear_503(client, admin) -> None:
    # Run requests are stored in MongoDB (one queue for every replica); unreachable here, so nothing is queued.
    response = client.get("/manualTraining/", headers=admin)
    assert response.status_code == 503
    assert response.get_json()["error_code"] == "DATABASE_UNAVAILABLE"
    # A malformed run id is a 404 without asking the database; a well-formed one needs it.
    assert client.get("/jobs/runs/nope").get_json()["error_code"] == "RUN_NOT_FOUND"
    assert client.get(f"/jobs/runs/{'a' * 300}").status_code == 404
    assert client.get(f"/jobs/runs/{'a' * 32}").status_code == 503


@pytest.mark.parametrize("n", ["\u00b2", "\u0663", "0", "501", "-1", "9" * 5000])
def test_promotions_n_takes_ascii_digits_only(client, n) -> None:
    response = client.get("/promotions", query_string={"n": n})
    assert response.status_code == 400 and response.get_json()["error_code"] == "INVALID_PARAMETER"


def test_json_errors(client, admin) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404 and response.get_json()["error_code"] == "NOT_FOUND"
    response = client.delete("/promotions")
    assert response.status_code == 405 and response.get_json()["error_code"] == "METHOD_NOT_ALLOWED"
    response = client.get("/promotions?n=abc")
    assert response.status_code == 400 and response.get_json()["error_code"] == "INVALID_PARAMETER"
    response = client.get("/promotions?n=5")
    assert response.status_code == 503 and response.get_json()["error_code"] == "DATABASE_UNAVAILABLE"


@pytest.mark.usefixtures("fast_mlflow_failures")
def test_registry_down_gives_503_not_500(client, admin) -> None:
    response = client.get("/model")
    assert response.status_code == 503 and response.get_json()["error_code"] == "REGISTRY_UNAVAILABLE"
    response = client.post("/model/rollback", headers=admin)
    assert response.status_code == 503 and response.get_json()["error_code"] == "REGISTRY_UNAVAILABLE"


def test_ready_reports_mongodb_and_mlflow(client) -> None:
    response = client.get("/ready")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["mongodb"]["ok"] is False and checks["mlflow"]["ok"] is False
    assert client.get("/health").status_code == 200
    assert b"training_promotions_total" in client.get("/metrics").data


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("mlflow-artifacts:/1/models/m-0123/artifacts", True),
        ("mlflow-artifacts:/1/0123abcd/artifacts/model", True),
        ("mlflow-artifacts:/", False),
        ("mlflow-artifacts:/1/models", False),
        ("s3://mlflow/1/models/m-0123/artifacts", False),
        ("file:///tmp/1/models/m-0123/artifacts", False),
    ],
)
def test_retention_only_deletes_a_model_folder_behind_the_server(uri: str, allowed: bool) -> None:
    from training.registry import RegistryError, _check_deletable

    if allowed:
        _check_deletable(uri)
    else:
        with pytest.raises(RegistryError, match="refusing"):
            _check_deletable(uri)


@pytest.mark.parametrize("standardize", [False, True])
def test_every_model_training_builds_loads_with_the_allow_list(tmp_path, standardize) -> None:
    """mlstack_core.model_files.TRUSTED_TYPES lists exactly what training/model.py can build."""
    import mlflow.sklearn

    from mlstack_core.model_files import TRUSTED_TYPES, load_model_dir

    pipeline = build_pipeline(alpha=0.5, l1_ratio=0.01, standardize=standardize, seed=1)
    built = {pipeline, *(step for _, step in pipeline.steps)}
    assert {f"{type(obj).__module__}.{type(obj).__qualname__}" for obj in built} <= TRUSTED_TYPES
    split = split_holdout(generate_frame(300, seed=2), fraction=0.2, seed=1)
    model = fit(pipeline, split)
    mlflow.sklearn.save_model(model, tmp_path / "m", serialization_format="skops", pip_requirements=[])
    loaded = load_model_dir(tmp_path / "m")
    assert evaluate(loaded, split.x_holdout, split.y_holdout) == evaluate(model, split.x_holdout, split.y_holdout)
