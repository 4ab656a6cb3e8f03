#!/usr/bin/env bash
# Installs what the tests need, then runs every test: the generator's suite generates real
# projects and runs fmt, clippy and their own tests inside them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
cargo test --workspace --locked "$@"
