# Sourced by the other scripts: where they keep what they install and build. Both live
# outside the clone, so that `cargo generate --path <clone> template` copies sources only.
# Override with KST_CACHE (everything) or CARGO_TARGET_DIR (build output only).
KST_CACHE=${KST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-service-template}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KST_CACHE/target}
PATH="$KST_CACHE/tools/bin:$PATH"
export KST_CACHE CARGO_TARGET_DIR PATH
