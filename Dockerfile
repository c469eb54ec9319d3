# chatstack: one image for every process role, started through app/entrypoint.py:
#
#   docker run … chatstack web | ws | migrate | collectstatic | manage ARGS…
#
# Stages: `nginx` is the reverse proxy (`--target nginx`): nginx/ and its start script,
# nothing of the app, so an app release leaves that image as it was (the web tier serves
# /static/ itself; nginx proxies it). It comes first, so that the legacy builder, which
# builds every stage up to the target, builds nothing else for it. `builder` installs the
# locked dependencies (uv.lock) into /opt/venv before any source is copied, so that layer
# stays cached; `app` adds the source, collects the static files and precompiles the
# bytecode; `runtime` (the default, last) is the slim image that runs as an unprivileged user.
#
# Build arguments:
#   BASE_IMAGE    any Debian-based image with python3 (3.11-3.13) and its venv module; the
#                 official Python image by default, a locally made base where none can be
#                 pulled (compose/images/offline/base.sh)
#   NGINX_IMAGE   the Debian-based image the nginx target starts from (nginx, bash, awk, useradd)
#   WHEELHOUSE    "true": install Python packages only from the wheels in .wheelhouse/ of
#                 the build context (pip/uv --no-index --find-links), for builders that
#                 cannot reach a package index; "false" (default): from the package index
#   UV_VERSION    the uv that turns uv.lock into a hash-pinned requirements file
#   VERSION, REVISION, CREATED, SOURCE   OCI labels (version, git commit, date, repo URL)
#
# Works with the legacy builder and with BuildKit (no RUN --mount, no heredocs).

# checkov:skip=CKV_DOCKER_7: FROM takes a build argument whose default is a pinned tag
ARG BASE_IMAGE=python:3.12-slim-bookworm
ARG NGINX_IMAGE=nginx:1.28-bookworm

# --- nginx: the reverse proxy of nginx/ ---------------------------------------------------
FROM ${NGINX_IMAGE} AS nginx
ARG VERSION=dev REVISION=unknown CREATED=unknown SOURCE=
LABEL org.opencontainers.image.title="chatstack-nginx" \
      org.opencontainers.image.description="nginx in front of the chatstack web and ws tiers" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
RUN set -eu; \
    groupadd --system --gid 10002 chatproxy; \
    useradd --system --uid 10002 --gid chatproxy --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin chatproxy
# nginx/ (templates and render.sh) and the start script, side by side.
COPY nginx/ compose/images/nginx-start.sh /etc/chat-nginx/
# render.sh fills the templates from these (and CHAT_WEB_UPSTREAM, CHAT_WS_UPSTREAM…) at start.
# No static files in the image: /static/ comes from the web tier, unless files are mounted
# at CHAT_STATIC_ROOT.
# The per-address limits are on in the image (a first line in front of the app's own; a
# load test from one address turns them off: docs/operations.md, "Abuse limits").
ENV NGINX_PORT=8080 \
    CHAT_STATIC_ROOT=/srv/static \
    NGINX_RUN_DIR=/tmp/nginx \
    NGINX_CONF_DIR=/tmp/nginx-conf \
    NGINX_WS_CONN_PER_ADDRESS=120 \
    NGINX_WS_RATE=10r/s \
    NGINX_AUTH_RATE=20r/m
USER 10002:10002
EXPOSE 8080
# nginx's graceful stop: open WebSockets get worker_shutdown_timeout to finish.
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${NGINX_PORT}"]
ENTRYPOINT ["/etc/chat-nginx/nginx-start.sh"]

# --- builder: locked dependencies only --------------------------------------------------
# (Few instructions: each one costs a container and a commit in the legacy builder.)
FROM ${BASE_IMAGE} AS builder
ARG UV_VERSION=0.9.30 WHEELHOUSE=false
# The lock, and for offline builds the wheels (".wheelhouse*" matches nothing when absent).
COPY pyproject.toml uv.lock .wheelhouse* /build/
# uv exports the runtime dependencies of the lock (no dev/load/browser groups) with their
# hashes; every package is then verified against the lock as it is installed.
RUN set -eu; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore UV_NO_CACHE=1 \
        UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy; \
    if [ "$WHEELHOUSE" = true ]; then set -- --no-index --find-links /build; else set --; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --no-cache-dir --quiet "$@" "uv==${UV_VERSION}"; \
    /opt/uv/bin/uv export --project /build --frozen --no-default-groups --no-emit-project --quiet \
        --output-file /build/requirements.txt; \
    /opt/uv/bin/uv venv --quiet --python "$(command -v python3)" /opt/venv; \
    /opt/uv/bin/uv pip install --quiet --python /opt/venv/bin/python --require-hashes --no-deps \
        "$@" --requirement /build/requirements.txt; \
    rm -rf /opt/uv

# --- app: source, static files, bytecode -------------------------------------------------
FROM builder AS app
COPY app/ /srv/chatstack/app/
# DEBUG=1 only so that settings load without the production secrets; nothing is served.
RUN set -eu; \
    DEBUG=1 CHAT_DATA_DIR=/tmp/build-data STATIC_ROOT=/srv/chatstack/static \
        /opt/venv/bin/python /srv/chatstack/app/entrypoint.py collectstatic --verbosity 0; \
    /opt/venv/bin/python -m compileall -q --invalidation-mode checked-hash /srv/chatstack/app; \
    rm -rf /tmp/build-data

# --- runtime: the application image (default target) --------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=dev REVISION=unknown CREATED=unknown SOURCE=
LABEL org.opencontainers.image.title="chatstack" \
      org.opencontainers.image.description="Django Channels chat: gunicorn (web), daphne (ws), migrate and manage roles" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# /var/lib/chatstack: the one place the app user may write, for one-shot outputs such as
# `manage create_users --tokens-out` (mount a volume there; the root stays read-only).
RUN set -eu; \
    groupadd --system --gid 10001 chat; \
    useradd --system --uid 10001 --gid chat --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin chat; \
    install -d -o chat -g chat -m 0755 /var/lib/chatstack
# Dependencies and source in separate layers: a code change ships a few MB, not the venv.
COPY --from=builder /opt/venv /opt/venv
COPY --from=app /srv/chatstack /srv/chatstack
# Production settings, listening on all interfaces of the container; everything secret
# (SECRET_KEY, DATABASE_URL, REDIS_URL) comes from the environment at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    BIND_HOST=0.0.0.0 \
    PORT=8000 \
    STATIC_ROOT=/srv/chatstack/static \
    CHAT_DATA_DIR=/tmp/chat-data \
    LOG_FORMAT=json \
    GUNICORN_WORKER_TMP_DIR=/dev/shm
USER 10001:10001
EXPOSE 8000
# Liveness of web and ws (a one-shot role has exited before the first check).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/opt/venv/bin/python", "/srv/chatstack/app/entrypoint.py"]
CMD ["web"]
