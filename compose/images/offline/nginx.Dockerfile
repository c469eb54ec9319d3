# Test only: an nginx base image from the offline Debian base and Debian's nginx package,
# standing in for the official nginx image (the Dockerfile's NGINX_IMAGE) where nothing
# can be pulled. The chat's nginx image is then built from it: Dockerfile, target nginx.
# checkov:skip=CKV_DOCKER_7: FROM takes a build argument whose default is a pinned tag
# checkov:skip=CKV_DOCKER_3: a base image; the chat's nginx image built FROM it sets USER
ARG BASE_IMAGE=chatstack-offline/base:bookworm
FROM ${BASE_IMAGE}
RUN set -eu; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "nginx=1.22.*" >/dev/null; \
    rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
HEALTHCHECK NONE
CMD ["nginx", "-g", "daemon off;"]
