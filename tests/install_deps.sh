#!/usr/bin/env bash
# Installs the Debian packages the test suite needs; safe to run again (installs only what is
# missing). Engineers add packages to PACKAGES; keep one package per line.
set -euo pipefail

PACKAGES=(
  e2fsprogs
  # Ceph RADOS Gateway for the S3 store tests (tests/support/rgw.ts)
  radosgw
  ceph-mon
  ceph-osd
  ceph-base
  ceph-common
  # NBD clients and reference servers
  nbdkit
  libnbd-bin
  python3-libnbd
  qemu-utils
  fio
  # kernel NBD client in a VM
  qemu-system-x86
  linux-image-amd64
  busybox-static
  # peers for side-by-side benchmarks
  s3backer
  fuse3
  nbdkit-plugin-python
  python3-boto3
  # PostgreSQL on lsvd (tests/serve/postgres_test.ts, bench/postgres.ts): server, pgbench, pg_amcheck
  postgresql
  python3-psycopg2
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
