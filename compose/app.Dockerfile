# The image of each Flask service (serving, etl, training): Gunicorn on port 8000 running the app its
# gunicorn.conf.py names (wsgi_app), Nginx in front (see the compose files). One Dockerfile for the three; the
# build args pick the service. Build context is the repository root, so the shared package and the pins are
# reachable:
#   docker build -f compose/app.Dockerfile --build-arg SERVICE=serving --build-arg SERVICE_DIR=serving-flask \
#       -t mlstack/serving .
FROM python:3.11-slim-bookworm

# SERVICE: serving, etl or training (its Python package); SERVICE_DIR: the folder holding it.
ARG SERVICE
ARG SERVICE_DIR

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric id, so orchestrators can check "not root" without reading /etc/passwd.
RUN if [ -z "$SERVICE" ] || [ -z "$SERVICE_DIR" ]; then \
        echo "build with --build-arg SERVICE=<serving|etl|training> --build-arg SERVICE_DIR=<its folder>" >&2; \
        exit 1; \
    fi \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && install -d -o app -g app /var/lib/mlstack /var/log/mlstack

# Dependencies layer: only the pins and the dependency lists, so code changes reuse it from the cache.
COPY constraints.txt scripts/containers/pyproject_deps.py /build/
COPY core/pyproject.toml /build/core/
COPY ${SERVICE_DIR}/pyproject.toml /build/service/
RUN python -m venv /opt/venv \
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

# State (leader lock, job queue) and logs go where the app user can write; the compose file mounts volumes there.
ENV SERVICE_NAME=${SERVICE} \
    STATE_DIR=/var/lib/mlstack \
    LOG_DIR=/var/log/mlstack
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py"]
