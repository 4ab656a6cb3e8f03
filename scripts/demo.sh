#!/usr/bin/env bash
# The main job: generate a service, build it, run it under load, send SIGTERM and watch it
# drain. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
cargo run --quiet --locked --package kube-service-template-tests --bin demo
