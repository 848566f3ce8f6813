"""Create the registry's users and their permissions on an MLflow server running ``--app-name basic-auth``.

The registry is the stack's trust boundary: whoever can move ``champion`` decides what serving runs. So each
service logs in as its own user. ``training`` may create experiments and runs, register versions and set
aliases (MANAGE on every experiment and on the registered model); ``serving`` may only read (READ on every
experiment and registered model). Everyone else, anonymous callers included, gets nothing: the server answers
401 without credentials, and ``basic_auth.ini`` sets ``default_permission = NO_PERMISSIONS`` for any other
user. The admin user is created by the server itself from MLFLOW_AUTH_ADMIN_PASSWORD.

It also creates the registered model (empty; training registers its versions), because for a model that does not
exist the server answers a non-admin's alias lookup 403. Idempotent, safe at every start: an existing user gets
the password from the environment again (so a rotated secret takes effect), an existing grant is replaced by the
level below.

Environment: MLFLOW_TRACKING_URI (default http://mlflow:5000), MLFLOW_ADMIN_USERNAME (default admin),
MLFLOW_ADMIN_PASSWORD, MLFLOW_TRAINING_PASSWORD, MLFLOW_SERVING_PASSWORD (required, 16+ characters, distinct),
MLFLOW_TRAINING_USERNAME / MLFLOW_SERVING_USERNAME (default training / serving), MODEL_NAME (default
sk-learn-linear-reg-model), PROVISION_TIMEOUT_SECONDS (default 60: how long to wait for the server).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import requests
from oneshot import job_logger, missing, retry_until, weak_secrets

REQUIRED = ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_TRAINING_PASSWORD", "MLFLOW_SERVING_PASSWORD")
TIMEOUT = 10.0


@dataclass(frozen=True)
class Grant:
    """One permission of one user on one resource (``*``: every resource of that type)."""

    resource_type: str
    resource_id: str
    permission: str


def grants(model_name: str) -> dict[str, list[Grant]]:
    """Role -> what it may do; the roles are the services that talk to the registry."""
    return {
        "training": [Grant("experiment", "*", "MANAGE"), Grant("registered_model", model_name, "MANAGE")],
        "serving": [Grant("experiment", "*", "READ"), Grant("registered_model", "*", "READ")],
    }


class AuthAdmin:
    """The admin side of MLflow's basic-auth REST API, as much as provisioning needs."""

    def __init__(self, uri: str, username: str, password: str) -> None:
        self.uri = uri.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (username, password)

    def _call(self, method: str, path: str, body: dict[str, str]) -> requests.Response:
        where = {"params": body} if method == "GET" else {"json": body}
        response = self.session.request(method, f"{self.uri}{path}", timeout=TIMEOUT, **where)
        if response.status_code in (401, 403):
            raise PermissionError(f"{method} {path}: HTTP {response.status_code} (is MLFLOW_ADMIN_PASSWORD right?)")
        return response

    def ping(self) -> None:
        """Raise unless the server answers an authenticated call."""
        self._call("GET", "/api/2.0/mlflow/users/get", {"username": self.session.auth[0]}).raise_for_status()

    def ensure_user(self, username: str, password: str) -> str:
        """Create the user, or set its password when it exists; returns what was done."""
        response = self._call("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})
        if _already_exists(response):
            self._call("PATCH", "/api/2.0/mlflow/users/update-password",
                       {"username": username, "password": password}).raise_for_status()
            return "password set"
        response.raise_for_status()
        return "created"

    def ensure_registered_model(self, name: str) -> str:
        """Create the (empty) registered model unless it exists; returns what was done.

        For a model that does not exist the server answers a non-admin's alias lookup 403, not 404 (it does not
        tell who may see what exists), which would read as "no permission" to training and serving.
        """
        response = self._call("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
        if _already_exists(response):
            return "exists"
        response.raise_for_status()
        return "created"

    def grant(self, username: str, grant: Grant) -> None:
        """Give the user exactly this permission on the resource (an earlier grant on it is replaced)."""
        body = {"username": username, "resource_type": grant.resource_type, "resource_id": grant.resource_id}
        response = self._call("POST", "/api/3.0/mlflow/users/permissions/grant",
                              body | {"permission": grant.permission})
        if _already_exists(response):
            self._call("POST", "/api/3.0/mlflow/users/permissions/revoke", body).raise_for_status()
            response = self._call("POST", "/api/3.0/mlflow/users/permissions/grant",
                                  body | {"permission": grant.permission})
        response.raise_for_status()


def _already_exists(response: requests.Response) -> bool:
    return response.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in response.text


def main() -> int:
    """Wait (bounded) for the server, then create the users and grants; exit code 0 when all are in place."""
    logger = job_logger("provision_users")
    if absent := missing(REQUIRED):
        logger.error("missing environment variables: %s", ", ".join(absent))
        return 2
    if weak := weak_secrets(REQUIRED):
        logger.error("placeholder or shorter than 16 characters: %s (python -c 'import secrets; "
                     "print(secrets.token_urlsafe(32))')", ", ".join(weak))
        return 2
    if len({os.environ[name] for name in REQUIRED}) != len(REQUIRED):
        logger.error("%s must all differ (each user gets its own secret)", ", ".join(REQUIRED))
        return 2
    users = {
        "training": (os.environ.get("MLFLOW_TRAINING_USERNAME", "training"), os.environ["MLFLOW_TRAINING_PASSWORD"]),
        "serving": (os.environ.get("MLFLOW_SERVING_USERNAME", "serving"), os.environ["MLFLOW_SERVING_PASSWORD"]),
    }
    uri = os.environ.get("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    admin = AuthAdmin(uri, os.environ.get("MLFLOW_ADMIN_USERNAME", "admin"), os.environ["MLFLOW_ADMIN_PASSWORD"])
    try:
        retry_until(admin.ping, what="MLflow", retry_on=(requests.RequestException,), logger=logger,
                    timeout=float(os.environ.get("PROVISION_TIMEOUT_SECONDS", "60")))
        model_name = os.environ.get("MODEL_NAME", "sk-learn-linear-reg-model")
        logger.info("registered model %r: %s", model_name, admin.ensure_registered_model(model_name))
        for role, role_grants in grants(model_name).items():
            username, password = users[role]
            logger.info("user %r: %s", username, admin.ensure_user(username, password))
            for grant in role_grants:
                admin.grant(username, grant)
                logger.info("user %r: %s on %s %r", username, grant.permission, grant.resource_type,
                            grant.resource_id)
    except (requests.RequestException, PermissionError) as exc:
        logger.error("provisioning the registry's users failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
