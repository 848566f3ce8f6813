"""Settings: required secrets, placeholder refusal, the original template's variable names."""

import pytest

from mlstack_core.settings import BaseServiceSettings, DataPathSettings, SettingsError, load_settings

TOKEN = "a-real-admin-token-0123456789"


def test_missing_admin_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="ADMIN_TOKEN: is required"):
        load_settings(BaseServiceSettings, {})


@pytest.mark.parametrize("token", ["changeme", "short", "secret", "   password  "])
def test_placeholder_or_short_tokens_are_refused(token):
    with pytest.raises(SettingsError, match="ADMIN_TOKEN"):
        load_settings(BaseServiceSettings, {"admin_token": token})


def test_original_env_names_build_the_mongo_uri(monkeypatch):
    monkeypatch.setenv("HOSTDBEXT", "mongo")
    monkeypatch.setenv("PORTDBEXT", "27018")
    monkeypatch.setenv("USERNAMEDBEXT", "root")
    monkeypatch.setenv("PASSWORDDBEXT", "p@ss:word")
    settings = load_settings(BaseServiceSettings, {"admin_token": TOKEN})
    assert settings.mongo_connection_uri() == "mongodb://root:p%40ss%3Aword@mongo:27018/"
    assert settings.mongo_db == "DUMMY"
    assert settings.mongo_collection == "dummy_col_demo"


def test_mongo_initdb_names_are_accepted_as_credentials(monkeypatch):
    monkeypatch.setenv("MONGO_INITDB_ROOT_USERNAME", "admin-user")
    monkeypatch.setenv("MONGO_INITDB_ROOT_PASSWORD", "a-strong-one")
    settings = load_settings(BaseServiceSettings, {"admin_token": TOKEN, "mongo_host": "db"})
    assert settings.mongo_connection_uri() == "mongodb://admin-user:a-strong-one@db:27017/"


def test_bad_port_names_the_variable():
    with pytest.raises(SettingsError, match="MONGO_PORT / PORTDBEXT"):
        load_settings(BaseServiceSettings, {"admin_token": TOKEN, "mongo_port": 0})


def test_mongo_uri_wins_over_parts():
    settings = load_settings(BaseServiceSettings, {"admin_token": TOKEN, "mongo_uri": "mongodb://x:1/"})
    assert settings.mongo_connection_uri() == "mongodb://x:1/"
    assert "mongodb://x:1/" not in repr(settings)  # secrets stay out of logs


SERVICE = "a-real-service-token-0123456789"


def test_data_path_services_require_a_service_token(monkeypatch):
    monkeypatch.delenv("SERVICE_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="SERVICE_TOKEN: is required"):
        load_settings(DataPathSettings, {"admin_token": TOKEN})


@pytest.mark.parametrize(("token", "why"), [("changeme", "placeholder"), ("short", "16 characters"),
                                            (TOKEN, "differ from ADMIN_TOKEN")])
def test_weak_or_reused_service_tokens_are_refused(token, why):
    with pytest.raises(SettingsError, match=f"SERVICE_TOKEN: .*{why}"):
        load_settings(DataPathSettings, {"admin_token": TOKEN, "service_token": token})


def test_a_distinct_service_token_is_accepted():
    settings = load_settings(DataPathSettings, {"admin_token": TOKEN, "service_token": SERVICE})
    assert settings.service_token.get_secret_value() == SERVICE
    assert settings.predictions_collection == "predictions"


REGISTRY_PASSWORD = "a-real-registry-password-0123"


def _registry(monkeypatch, **values):
    from mlstack_core.settings import RegistryClientSettings

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return load_settings(RegistryClientSettings, values)


def test_registry_credentials_are_optional_but_never_half_set(monkeypatch):
    assert _registry(monkeypatch).mlflow_tracking_username is None
    with pytest.raises(SettingsError, match="MLFLOW_TRACKING_PASSWORD: is required when MLFLOW_TRACKING_USERNAME"):
        _registry(monkeypatch, mlflow_tracking_username="serving")
    with pytest.raises(SettingsError, match="MLFLOW_TRACKING_PASSWORD: is set but MLFLOW_TRACKING_USERNAME is not"):
        _registry(monkeypatch, mlflow_tracking_password=REGISTRY_PASSWORD)


@pytest.mark.parametrize("password", ["password", "changeme", "short"])
def test_registry_password_placeholders_are_refused(monkeypatch, password):
    with pytest.raises(SettingsError, match="MLFLOW_TRACKING_PASSWORD: must be a real secret"):
        _registry(monkeypatch, mlflow_tracking_username="serving", mlflow_tracking_password=password)


def test_registry_credentials_reach_mlflows_client(monkeypatch):
    settings = _registry(monkeypatch, mlflow_tracking_username="serving", mlflow_tracking_password=REGISTRY_PASSWORD)
    settings.configure_registry_client()
    from mlflow.utils.credentials import read_mlflow_creds

    assert read_mlflow_creds() == ("serving", REGISTRY_PASSWORD)
