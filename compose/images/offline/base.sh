#!/bin/sh
# Build a Debian bookworm base image with no registry: debootstrap a minbase root
# filesystem (python3, python3-venv, ca-certificates, as the official python image has
# them plus netbase and tzdata) and `docker import` it. Used by the container tests,
# whose engine has no images and cannot pull any.
#
#   compose/images/offline/base.sh TAG CACHE_DIR
#
# The root filesystem tarball is cached in CACHE_DIR; an existing image TAG is kept.
# Needs root (debootstrap) and debootstrap itself (apt-get install debootstrap).
set -eu

tag=${1:?usage: base.sh TAG CACHE_DIR}
cache=${2:?usage: base.sh TAG CACHE_DIR}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
# A change to this script makes a new root filesystem and image.
key=$(sha256sum "$0" | cut -c1-12)
tarball=$cache/$suite-python3-$key.tar

have=$(docker image inspect --format '{{ index .Config.Labels "chatstack.base-key" }}' "$tag" 2>/dev/null || true)
if [ "$have" = "$key" ]; then
  echo "base image $tag is up to date ($key)"
  exit 0
fi

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  root=$(mktemp -d "${TMPDIR:-/tmp}/chatstack-rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap $suite into $root"
  debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
  # Images built on this base install packages with apt-get, then clean up themselves;
  # keep the base as small as the official slim images (no lists, caches or docs).
  cat >"$root/etc/dpkg/dpkg.cfg.d/01-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/01-no-recommends"
  # As in Debian's official images: downloaded packages never stay in a layer.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  # No service starts while a package installs in a build container.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/*.log "$root"/tmp/* "$root"/root/.cache
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
  trap - EXIT
fi

echo "docker import $tarball as $tag"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL chatstack.base-key=$key" \
  "$tarball" "$tag" >/dev/null
# Older root filesystems of this cache are no longer needed.
find "$cache" -maxdepth 1 -name "$suite-python3-*.tar" ! -name "$(basename "$tarball")" -delete
