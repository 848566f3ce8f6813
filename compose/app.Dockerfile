# The image of each Flask service (serving, etl, training): Gunicorn on port 8000, Nginx in front (see compose).
# One file for the three, told which service by build arguments; each service's gunicorn.conf.py names its app.
# Build context is the repository root, so the shared package and the pins are reachable:
#   docker build -f compose/app.Dockerfile --build-arg SERVICE_DIR=etl-flask-scheduler \
#       --build-arg SERVICE_NAME=etl -t mlstack/etl .
FROM python:3.11-slim-bookworm

ARG SERVICE_DIR
ARG SERVICE_NAME

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric id, so orchestrators can check "not root" without reading /etc/passwd.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && install -d -o app -g app /var/lib/mlstack /var/log/mlstack

# Dependencies layer: only the pins and the dependency lists, so code changes reuse it from the cache.
COPY constraints.txt scripts/containers/pyproject_deps.py /build/
COPY core/pyproject.toml /build/core/
COPY ${SERVICE_DIR}/pyproject.toml /build/service/
RUN test -n "$SERVICE_DIR" && test -n "$SERVICE_NAME" \
    && python -m venv /opt/venv \
    && python /build/pyproject_deps.py /build/core/pyproject.toml /build/service/pyproject.toml \
        >/build/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -c /build/constraints.txt -r /build/requirements.txt

# Code layer: the shared package once, then the service, both as regular (non-editable) installs.
COPY core/ /build/core/
COPY ${SERVICE_DIR}/ /build/service/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /build/core /build/service \
    && install -d /app \
    && cp /build/service/gunicorn.conf.py /app/gunicorn.conf.py \
    && rm -rf /build

# Logs (and STATE_DIR: the jobs keep nothing there, their schedule, runs and leases live in MongoDB) go where the
# app user can write; the compose file mounts volumes there.
ENV SERVICE_NAME=${SERVICE_NAME} \
    STATE_DIR=/var/lib/mlstack \
    LOG_DIR=/var/log/mlstack
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
# The app to run is the wsgi_app of the service's gunicorn.conf.py.
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py"]
