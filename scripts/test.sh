#!/usr/bin/env bash
# Runs every test of the repository (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -count=1 -timeout 40m ./... "$@"
