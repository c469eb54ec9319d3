# Locust for load tests (compose profile `loadtest`, k8s Locust Job): the lock's `load`
# dependency group and the repo's loadtests/. Independent of the app image.
#
#   docker build -f compose/images/locust.Dockerfile -t chatstack-locust .
#   docker run chatstack-locust --headless --locustfile /srv/loadtests/locustfile.py …
#
# BASE_IMAGE and WHEELHOUSE as in the main Dockerfile.
# checkov:skip=CKV_DOCKER_7: FROM takes a build argument whose default is a pinned tag
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG UV_VERSION=0.9.30 WHEELHOUSE=false
COPY pyproject.toml uv.lock .wheelhouse* /build/
RUN set -eu; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore UV_NO_CACHE=1 \
        UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy; \
    if [ "$WHEELHOUSE" = true ]; then set -- --no-index --find-links /build; else set --; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --no-cache-dir --quiet "$@" "uv==${UV_VERSION}"; \
    /opt/uv/bin/uv export --project /build --frozen --only-group load --no-emit-project --quiet \
        --output-file /build/requirements.txt; \
    /opt/uv/bin/uv venv --quiet --python "$(command -v python3)" /opt/venv; \
    /opt/uv/bin/uv pip install --quiet --python /opt/venv/bin/python --require-hashes --no-deps \
        "$@" --requirement /build/requirements.txt; \
    rm -rf /opt/uv

FROM ${BASE_IMAGE}
ARG VERSION=dev REVISION=unknown CREATED=unknown SOURCE=
LABEL org.opencontainers.image.title="chatstack-locust" \
      org.opencontainers.image.description="Locust load tests for chatstack (loadtests/)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
RUN set -eu; \
    groupadd --system --gid 10003 locust; \
    useradd --system --uid 10003 --gid locust --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin locust
COPY --from=builder /opt/venv /opt/venv
COPY loadtests/ /srv/loadtests/
# Reports and CSVs land in the working directory (HOME): a tmpfs or volume under a
# read-only root.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10003:10003
EXPOSE 8089 5557
HEALTHCHECK NONE
ENTRYPOINT ["/opt/venv/bin/locust"]
CMD ["--help"]
