#!/usr/bin/env bash
# Builds Citus from the vendored source (../shared/vendor/citus-13.2.2-pg15.tar.gz, see its
# README.md) and installs it into Debian's PostgreSQL 15 (/usr/lib/postgresql/15), for the Citus
# test harness (tests/citus/). No registry this project reaches ships Citus for PostgreSQL 15.
#
#   sudo bash .ci/citus-build.sh          # AQM_VENDOR_DIR=/elsewhere to take the tarball from elsewhere
#
# Cached: the install writes a stamp next to the extension's control file
# (/usr/share/postgresql/15/extension/citus.aqm-build-stamp) holding the tarball's sha256 and the
# sha256 of the citus.so and citus.control it installed. When the stamp, the installed files and
# the tarball all agree, the script does nothing (a second or so).
#
# Build dependencies (Debian 12) are installed with apt-get when missing: postgresql-15 and
# postgresql-server-dev-15 of the SAME version (the headers must be the server's; if postgresql-15
# is installed already, the -dev package is pinned to its version rather than upgrading the
# server other tests run), autoconf, flex, bison and the -dev libraries the vendor README lists.
# Needs root (apt-get, make install into /usr).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
vendor="${AQM_VENDOR_DIR:-$here/../shared/vendor}"
tarball="$vendor/citus-13.2.2-pg15.tar.gz"
# From the vendor README (../shared/vendor/README.md); the script refuses any other tarball.
expected_sha256="d4231a3a13c26f1ba562e888b000f90c1aabce8799f21ea582af15da177195fa"
pg_config=/usr/lib/postgresql/15/bin/pg_config
stamp=/usr/share/postgresql/15/extension/citus.aqm-build-stamp

say() { echo "citus-build: $*"; }
die() { echo "citus-build: $*" >&2; exit 1; }

[ -f "$tarball" ] || die "the Citus source is missing: $tarball (set AQM_VENDOR_DIR to the directory that holds citus-13.2.2-pg15.tar.gz)"
actual_sha256=$(sha256sum "$tarball" | cut -d' ' -f1)
[ "$actual_sha256" = "$expected_sha256" ] \
  || die "$tarball has sha256 $actual_sha256, expected $expected_sha256 (vendor README): refusing to build it"

# --- cache: installed files that match this tarball -------------------------------------------
installed_matches() {
  [ -x "$pg_config" ] && [ -f "$stamp" ] || return 1
  local pkglib share so control
  pkglib=$("$pg_config" --pkglibdir)
  share=$("$pg_config" --sharedir)
  so="$pkglib/citus.so"
  control="$share/extension/citus.control"
  [ -f "$so" ] && [ -f "$control" ] || return 1
  grep -qx "tarball_sha256=$expected_sha256" "$stamp" || return 1
  grep -qx "citus_so_sha256=$(sha256sum "$so" | cut -d' ' -f1)" "$stamp" || return 1
  grep -qx "citus_control_sha256=$(sha256sum "$control" | cut -d' ' -f1)" "$stamp" || return 1
}

if installed_matches; then
  say "Citus from $(basename "$tarball") ($expected_sha256) is installed already ($stamp): nothing to do"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "Citus is not installed (or not from this tarball); building and installing it needs root (apt-get, make install into /usr): run this script as root"

# --- build dependencies --------------------------------------------------------------------------
installed_version() { { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } | sed -n 's/^install ok installed //p'; }

packages="postgresql-15 postgresql-server-dev-15 autoconf flex bison make gcc libcurl4-openssl-dev libicu-dev libkrb5-dev
  liblz4-dev libpam0g-dev libreadline-dev libselinux1-dev libssl-dev libxslt1-dev libzstd-dev uuid-dev"
server_version=$(installed_version postgresql-15)
missing=()
for package in $packages; do
  version=$(installed_version "$package")
  if [ "$package" = postgresql-server-dev-15 ] && [ -n "$server_version" ]; then
    # the headers of the installed server, not a newer minor release's
    [ "$version" = "$server_version" ] || missing+=("$package=$server_version")
  elif [ -z "$version" ]; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # the package's own postgresql service is not used: the harness starts its own clusters
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "build dependencies: all installed"
fi
[ -x "$pg_config" ] || die "$pg_config is missing after installing postgresql-server-dev-15"
server_version=$(installed_version postgresql-15)
dev_version=$(installed_version postgresql-server-dev-15)
[ "$server_version" = "$dev_version" ] \
  || die "postgresql-15 is $server_version but postgresql-server-dev-15 is $dev_version: the headers must match the server"

# --- build ---------------------------------------------------------------------------------------
work=$(mktemp -d /tmp/aqm-citus-build-XXXXXX)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
say "building Citus 13.2.2 for PostgreSQL $("$pg_config" --version | cut -d' ' -f2) in $work (log: $work/build.log, printed on failure)"
build() {
  tar xzf "$tarball" -C "$work"
  cd "$work"/citus-13.2.2
  ./configure PG_CONFIG="$pg_config"
  make -j2
  make install
}
if ! (build) >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log" >&2
  die "the build failed (last 60 lines above)"
fi
elapsed=$(( $(date +%s) - started ))

pkglib=$("$pg_config" --pkglibdir)
share=$("$pg_config" --sharedir)
so="$pkglib/citus.so"
control="$share/extension/citus.control"
[ -f "$so" ] && [ -f "$control" ] || die "make install left no $so or $control"
{
  echo "# written by .ci/citus-build.sh: the Citus installed here was built from this tarball"
  echo "tarball=$(basename "$tarball")"
  echo "tarball_sha256=$expected_sha256"
  echo "citus_so_sha256=$(sha256sum "$so" | cut -d' ' -f1)"
  echo "citus_control_sha256=$(sha256sum "$control" | cut -d' ' -f1)"
  echo "postgresql=$server_version"
  echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "build_seconds=$elapsed"
} > "$stamp"
installed_matches || die "the stamp $stamp does not match what was installed"
say "built and installed in ${elapsed}s (configure + make -j2 + make install): $so, $control; stamp $stamp"
