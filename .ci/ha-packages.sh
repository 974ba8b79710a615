#!/bin/sh
# Installs what the high-availability test harness (tests/ha/) needs, from Debian 12's own
# repositories, when it is missing:
#
#   patroni      3.0.2  (Patroni; pulls python3-psycopg2, python3-yaml, python3-urllib3, ...)
#   python3-etcd 0.4.5  Patroni's etcd AND etcd3 support import it (patroni/dcs/etcd3.py does
#                       `import etcd` and builds on dcs/etcd.py); patroni's Depends names it only
#                       as the first of several alternatives, so it is asked for by name here.
#                       python3-etcd3 (the gRPC client) is NOT used by Patroni 3.0.
#   etcd-server  3.4.23 (etcd: v3 API; its v2 API is off by default, hence Patroni's etcd3 section)
#   postgresql-15       (server binaries in /usr/lib/postgresql/15/bin)
#   util-linux          (setpriv: the harness runs everything as the postgres user when root)
#
# Idempotent: does nothing when all are installed. Needs root (apt-get). The package's own
# services are not started (the harness starts its own etcd and Patroni processes).
#
#   sh .ci/ha-packages.sh
set -eu

packages="patroni python3-etcd etcd-server postgresql-15 util-linux"

missing=""
for package in $packages; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  case "$status" in
    *"install ok installed"*) ;;
    *) missing="$missing $package" ;;
  esac
done

if [ -z "$missing" ]; then
  echo "ha-packages: all installed ($packages)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ha-packages: missing:$missing; installing them needs root (apt-get): run this script as root" >&2
  exit 1
fi

echo "ha-packages: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# A policy-rc.d that forbids starting services (as in containers) only prints a notice; on a
# machine that does start them, the distribution's etcd and postgresql services stay as they are:
# the harness uses its own ports and directories.
apt-get install -y --no-install-recommends $missing

for binary in /usr/bin/patroni /usr/bin/etcd /usr/lib/postgresql/15/bin/postgres /usr/bin/setpriv; do
  if [ ! -x "$binary" ]; then
    echo "ha-packages: $binary is missing after the install" >&2
    exit 1
  fi
done
/usr/bin/python3 -c 'import etcd, patroni.dcs.etcd3' || { echo "ha-packages: Patroni cannot load its etcd3 support" >&2; exit 1; }
echo "ha-packages: installed$missing"
