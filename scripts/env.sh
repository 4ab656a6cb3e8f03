# Sourced by the other scripts: where they keep what they install and build. Both live
# outside the clone, so that `cargo generate --path <clone> template` copies sources only.
# Override with KST_CACHE (everything) or CARGO_TARGET_DIR (build output only).
KST_CACHE=${KST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-service-template}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KST_CACHE/target}
PATH="$KST_CACHE/tools/bin:$PATH"
export KST_CACHE CARGO_TARGET_DIR PATH

# Clones share the build cache, and cargo judges this workspace's own crates fresh by file
# times: a clone whose files are older than what another clone built last would get that
# clone's build. So the first build from a clone other than the last one touches its
# sources, and cargo rebuilds them (dependencies stay cached).
claim_build_cache() {
    local here last_file="$CARGO_TARGET_DIR/.built-from"
    here=$(pwd -P)
    mkdir -p "$CARGO_TARGET_DIR"
    if [ "$(cat "$last_file" 2>/dev/null)" != "$here" ]; then
        git ls-files -z -- '*.rs' '*Cargo.toml' | xargs -0 -r touch
        echo "$here" > "$last_file"
    fi
}
