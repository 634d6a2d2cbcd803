#!/usr/bin/env bash
# Builds the OpenTofu CLI from its Go module source and caches the binary, so the
# Terraform/OpenTofu provider's acceptance tests (terraform-provider-toygres/) can
# run a real `tofu`. Idempotent: a cached binary of the pinned version is reused.
#
# `go install github.com/opentofu/opentofu/cmd/tofu@VERSION` is refused because
# OpenTofu's go.mod has replace directives, so this downloads the module and
# builds inside it, where its go.mod (with its replaces) applies.
#
# Prints the binary's path on stdout. Override the version with TOFU_VERSION.
set -euo pipefail

version="${TOFU_VERSION:-v1.10.10}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/toygres-tofu/$version"
bin="$cache/tofu"

if [[ -x "$bin" ]] && "$bin" version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
# `go mod download` needs a module context-free directory to not touch a go.mod.
dir="$(cd "$cache" && GOFLAGS=-mod=mod go mod download -json "github.com/opentofu/opentofu@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$dir" || ! -d "$dir" ]]; then
	echo "build-tofu: could not download github.com/opentofu/opentofu@$version" >&2
	exit 1
fi

echo "build-tofu: building tofu $version from $dir (takes several minutes cold)" >&2
tmp="$bin.tmp.$$"
(cd "$dir" && CGO_ENABLED=0 go build -trimpath -o "$tmp" ./cmd/tofu)
mv "$tmp" "$bin"
"$bin" version >&2
echo "$bin"
