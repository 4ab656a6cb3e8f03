#!/usr/bin/env bash
# Installs what the tests need, then runs every test: the generator's suite generates real
# projects and runs fmt, clippy and their own tests inside them. Every test file runs even
# when an earlier one failed, and a summary at the end says, per file, what passed, what
# failed and how long it took. Arguments go to `cargo test` (e.g. `--test chart`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
claim_build_cache

scripts/install.sh test
# A cold CI run never reuses incremental state: it would only cost time and gigabytes (one
# copy per generated project).
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
mkdir -p "$KST_CACHE/logs"
log="$KST_CACHE/logs/test-$(date +%Y%m%d-%H%M%S).log"
started=$SECONDS
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
awk -v seconds=$((SECONDS - started)) -v status="$status" -v logfile="$log" \
    -f scripts/test-summary.awk "$log"
exit "$status"
