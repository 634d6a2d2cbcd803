#!/usr/bin/env bash
# Runs every test of the repository (the README's test command).
#
# The Kubernetes driver's tests need a real API server: when KUBECONFIG is
# not set and the workplace's control-plane scripts are present
# (../shared/k8s), the tests run inside one. Without either, those tests
# fail and say how to provide a cluster.
#
# Then the OpenTofu/Terraform provider's tests (its own module,
# terraform-provider-toygres/), which run a real tofu: scripts/build-tofu.sh
# builds and caches it (CI runs it from scripts/setup.sh --test).
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
run=(go test -p 1 -count=1 -timeout 60m ./... "$@")
k8s="$(cd .. && pwd)/shared/k8s/with-k8s.sh"
if [ -z "${KUBECONFIG:-}" ] && [ -x "$k8s" ]; then
	"$k8s" "${run[@]}"
else
	"${run[@]}"
fi
(cd terraform-provider-toygres && go vet ./... && go test -p 1 -count=1 -timeout 30m ./...)
