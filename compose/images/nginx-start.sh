#!/bin/sh
# Entrypoint of the nginx image (Dockerfile, target nginx): render the repo's nginx/
# templates (copied to /etc/chat-nginx) from the environment into NGINX_CONF_DIR, which
# must be writable (a tmpfs or emptyDir under a read-only root), then run nginx in the
# foreground as the image's unprivileged user. Settings: see nginx/render.sh.
set -eu
conf=${NGINX_CONF_DIR:-/tmp/nginx-conf}
/etc/chat-nginx/render.sh "$conf"
exec nginx -p "$conf" -c "$conf/nginx.conf" -e stderr -g 'daemon off;' "$@"
