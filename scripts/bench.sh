#!/usr/bin/env bash
# Prints figures for a freshly generated service (build time, binary size, RSS, time to
# ready, time from SIGTERM to exit). Figures are printed, never asserted.
# Pass --no-clean-build to skip the clean release build (the slowest part).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
claim_build_cache

scripts/install.sh bench
cargo run --quiet --release --locked --package kube-service-template-tools --bin bench -- "$@"
