#!/usr/bin/env bash
# Installs the system packages Toygres and its tests use (Debian/Ubuntu,
# run as root or with sudo): a C compiler for the SQLite driver and the
# PostgreSQL server binaries (instances and test clusters).
set -euo pipefail

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
	need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	echo "setup: installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts a system cluster; Toygres and the tests run their
# own, so it is not needed.
if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_lsclusters -h 2>/dev/null)" ] && [ "${CI:-}" = "true" ]; then
	pg_ctlcluster --force "$(pg_lsclusters -h | awk 'NR==1{print $1}')" "$(pg_lsclusters -h | awk 'NR==1{print $2}')" stop >/dev/null 2>&1 || true
fi
go version
