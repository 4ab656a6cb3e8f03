#!/usr/bin/env bash
# Installs what the demo and the tests need. Idempotent: what is already present at the
# right version is skipped, so a second run takes seconds.
set -euo pipefail

CARGO_GENERATE_VERSION=0.23.10 # 0.24 and later need a newer rustc than this machine's 1.95

say() { printf '[install] %s\n' "$*"; }

if cargo generate --version 2>/dev/null | grep -qE " ${CARGO_GENERATE_VERSION//./\\.}$"; then
    say "cargo-generate ${CARGO_GENERATE_VERSION}: present"
else
    say "cargo-generate ${CARGO_GENERATE_VERSION}: installing (about 5 minutes)"
    cargo install --locked "cargo-generate@${CARGO_GENERATE_VERSION}"
fi

for component in rustfmt clippy; do
    if cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "${component}: present"
    else
        say "${component}: installing"
        rustup component add "${component}"
    fi
done
