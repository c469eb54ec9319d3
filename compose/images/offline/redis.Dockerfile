# Test only: Redis from the offline Debian base and Debian's redis-server package, standing
# in for the official redis image that compose/compose.yaml uses.
# checkov:skip=CKV_DOCKER_7: FROM takes a build argument whose default is a pinned tag
ARG BASE_IMAGE=chatstack-offline/base:bookworm
FROM ${BASE_IMAGE}
# uid/gid 999, as in the official image (the package reuses an existing redis user).
RUN set -eu; \
    groupadd --system --gid 999 redis; \
    useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "redis-server=5:7.0.*" >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    install -d -o redis -g redis -m 0750 /data
WORKDIR /data
USER 999:999
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["redis-cli", "ping"]
CMD ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
