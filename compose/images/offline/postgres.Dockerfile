# Test only (build context: this folder): PostgreSQL from the offline Debian base and Debian's postgresql-15 package,
# standing in for the official postgres image that compose/compose.yaml uses. It honours
# the same variables (POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA).
# checkov:skip=CKV_DOCKER_7: FROM takes a build argument whose default is a pinned tag
ARG BASE_IMAGE=chatstack-offline/base:bookworm
FROM ${BASE_IMAGE}
# uid/gid 999, as in the official image (the package reuses an existing postgres user).
RUN set -eu; \
    groupadd --system --gid 999 postgres; \
    useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/no-main.conf; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "postgresql-15=15.*" >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data; \
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER 999:999
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["pg_isready", "-h", "127.0.0.1", "-q"]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]
