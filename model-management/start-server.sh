#!/bin/sh
# Start the MLflow tracking + model registry server: make sure the artifact bucket exists, then exec the server
# (it becomes PID 1's child directly, so it receives the container's SIGTERM).
# Artifacts are proxied (--serve-artifacts): only this server needs the S3 credentials.
# Basic auth is always on (--app-name basic-auth, basic_auth.ini): no default admin password, so the first start
# needs MLFLOW_AUTH_ADMIN_PASSWORD; provision_users.py (a separate one-shot job) creates the services' users.
set -eu

: "${MLFLOW_BACKEND_STORE_URI:=sqlite:////data/mlflow.db}"
: "${MLFLOW_BUCKET:=mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:=s3://${MLFLOW_BUCKET}/}"
: "${MLFLOW_HOST:=0.0.0.0}"
: "${MLFLOW_PORT:=5000}"
# The server refuses requests whose Host header is not listed (DNS-rebinding guard): name every way it is reached.
: "${MLFLOW_SERVER_ALLOWED_HOSTS:=mlflow:${MLFLOW_PORT},localhost:${MLFLOW_PORT},127.0.0.1:${MLFLOW_PORT}}"
: "${MLFLOW_WORKERS:=2}"
: "${MLFLOW_AUTH_CONFIG_PATH:=$(dirname "$0")/basic_auth.ini}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (the auth app signs its forms with it)}"
export MLFLOW_BUCKET MLFLOW_AUTH_CONFIG_PATH
# mlflow server reads these from the environment: the backend URI carries the database password, which must
# not show on the command line (ps).
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION MLFLOW_SERVER_ALLOWED_HOSTS

python "$(dirname "$0")/create_bucket.py"

exec mlflow server \
    --app-name basic-auth \
    --serve-artifacts \
    --host "${MLFLOW_HOST}" \
    --port "${MLFLOW_PORT}" \
    --workers "${MLFLOW_WORKERS}"
