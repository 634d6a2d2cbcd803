#!/usr/bin/env bash
# Installs the system packages Toygres and its tests use on Debian/Ubuntu
# (run as root or with sudo):
#   gcc, libc6-dev        the SQLite driver is cgo
#   postgresql            server binaries for instances (local data plane) and test clusters
#   passwd                useradd/userdel: each local instance runs under an OS account of its own
#   chromium, chromium-driver   browser tests of the web console   (--test)
#   prometheus            the observability acceptance test        (--test)
# With --test it also builds OpenTofu (scripts/build-tofu.sh) for the
# provider's acceptance tests, and Jaeger (scripts/build-jaeger.sh) for the
# trace acceptance test (cmd/toygres TestE2ETraces); both are cached.
# Without --test it installs only what running Toygres needs.
set -euo pipefail

want=(gcc libc6-dev postgresql passwd)
if [ "${1:-}" = "--test" ]; then
	want+=(chromium chromium-driver prometheus)
fi
need=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#need[@]} -gt 0 ]; then
	echo "setup: installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian packages may start system services (a PostgreSQL cluster on
# 5432, Prometheus on 9090). Toygres and its tests run their own, so stop
# them where a service manager started them.
if command -v pg_lsclusters >/dev/null 2>&1; then
	pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
		$SUDO pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
	done
fi
if command -v service >/dev/null 2>&1; then
	$SUDO service prometheus stop >/dev/null 2>&1 || true
fi
go version
if [ "${1:-}" = "--test" ]; then
	"$(dirname "$0")/build-tofu.sh" >/dev/null
	"$(dirname "$0")/build-jaeger.sh" >/dev/null
fi
