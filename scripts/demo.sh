#!/usr/bin/env bash
# The main job: generate a service, build it, and roll three replicas of it under load in
# the Kubernetes simulator, printing the drain as it happens. Installs what it needs first
# (cargo-generate and Helm 4 only).
#
# On a 2-core machine the first run takes about 11 minutes (installing cargo-generate about
# 7, building the simulator about 1, building the service about 2.5, the rollout under 1);
# later runs take about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
claim_build_cache

echo "[demo] first run on 2 cores: about 11 minutes (7 of them installing cargo-generate, once per machine); later runs: about a minute"
scripts/install.sh demo
echo "[demo] building the simulator"
cargo build --locked --package kube-service-template-tools --bin demo
"$CARGO_TARGET_DIR/debug/demo"
