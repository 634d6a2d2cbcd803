#!/usr/bin/env bash
# Builds the Jaeger all-in-one binary from the tools module tools/jaeger (a
# separate go.mod, so Jaeger's dependencies never reach Toygres's own go.mod)
# and caches it, so the trace acceptance test (cmd/toygres TestE2ETraces) can
# send OTLP to a real trace backend and query it. Idempotent: a cached binary
# built from the same tools/jaeger/go.sum is reused.
#
# Prints the binary's path on stdout. The test finds it there too
# ($XDG_CACHE_HOME or ~/.cache, toygres-jaeger/<version>/jaeger), or at
# $TOYGRES_JAEGER.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/tools/jaeger"
version="$(sed -n 's/^[[:space:]]*github.com\/jaegertracing\/jaeger \(v[^ ]*\).*$/\1/p' "$mod/go.mod" | head -1)"
if [[ -z "$version" ]]; then
	echo "build-jaeger: no github.com/jaegertracing/jaeger version in $mod/go.mod" >&2
	exit 1
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/toygres-jaeger/$version"
bin="$cache/jaeger"
stamp="$cache/go.sum.sha256"
sum="$(sha256sum "$mod/go.sum" | cut -d' ' -f1)"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
echo "build-jaeger: building jaeger $version (takes several minutes cold)" >&2
tmp="$bin.tmp.$$"
(cd "$mod" && CGO_ENABLED=0 go build -trimpath -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
mv "$tmp" "$bin"
echo "$sum" >"$stamp"
echo "$bin"
