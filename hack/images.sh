#!/usr/bin/env bash
# Builds the project's images with podman (daemonless), tagged by the chart's appVersion:
#   ghcr.io/modelloop/operator:<appVersion>, .../trainer:<appVersion>, .../server:<appVersion>
#
#   bash hack/images.sh [operator] [trainer] [server]   build these (default: all three)
#   bash hack/images.sh --tags [names]                  print name=tag lines, build nothing
#
# Where no registry is reachable the base image is made locally: a Debian bookworm minbase
# with python3 (mmdebstrap), imported once and cached by its package list. PYTHON_IMAGE
# overrides it (e.g. python:3.11.11-slim-bookworm where a registry is reachable). Layers are
# cached (podman build --layers), so an unchanged image is not rebuilt. Torch comes from
# PyTorch's CPU index when it answers, else from PyPI (TORCH_VARIANT=cpu|cuda forces one);
# the PyPI wheel bundles the CUDA libraries (docs/install.md has the sizes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/hack/containers/containers.conf}"
version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/modelloop/Chart.yaml")"
registry="${MODELLOOP_IMAGE_REGISTRY:-ghcr.io/modelloop}"
suite=bookworm
base_packages=python3,python3-venv,ca-certificates

step="start"
log() { printf '[images] %s\n' "$*" >&2; }
fail() { log "FAILED at step '$step': $*"; exit 1; }
tag_of() { printf '%s/%s:%s' "$registry" "$1" "$version"; }
dockerfile_of() {
  case "$1" in
    operator) echo "$root/operator/Dockerfile" ;;
    trainer) echo "$root/trainer-image/Dockerfile" ;;
    server) echo "$root/server-image/Dockerfile" ;;
    *) fail "unknown image '$1' (operator, trainer or server)" ;;
  esac
}

names=()
tags_only=0
for arg in "$@"; do
  case "$arg" in
    --tags) tags_only=1 ;;
    *) dockerfile_of "$arg" >/dev/null; names+=("$arg") ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=(operator trainer server)
[ -n "$version" ] || { step="read appVersion"; fail "no appVersion in charts/modelloop/Chart.yaml"; }
if [ "$tags_only" = 1 ]; then
  for name in "${names[@]}"; do printf '%s=%s\n' "$name" "$(tag_of "$name")"; done
  exit 0
fi

step="container tools (podman, runc, mmdebstrap)"
missing=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail "${missing[*]} not installed; install Debian's podman buildah runc mmdebstrap uidmap"
  fi
  log "installing podman, buildah, runc, mmdebstrap from Debian (missing: ${missing[*]})"
  packages=(podman buildah runc mmdebstrap uidmap fuse-overlayfs slirp4netns)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
           "${packages[@]}" >/dev/null; } \
    || fail "apt-get install ${packages[*]} failed"
fi
podman info >/dev/null 2>&1 || fail "podman info fails: $(podman info 2>&1 | tail -3)"

# Only one build at a time: two would race for the same layers and the same base import.
cache="${MODELLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelloop}"
mkdir -p "$cache"
exec 9>"$cache/.images.lock"
flock 9

step="base image"
base="${PYTHON_IMAGE:-}"
if [ -z "$base" ]; then
  key="$(printf '%s %s %s' "$suite" "$base_packages" minbase | sha256sum | cut -c1-12)"
  base="localhost/modelloop/python-base:$suite-$key"
  if ! podman image exists "$base"; then
    log "making $base: mmdebstrap --variant=minbase $suite with $base_packages (about a minute)"
    tarball="$(mktemp --suffix=.tar)"
    trap 'rm -f "$tarball"' EXIT
    mmdebstrap --quiet --variant=minbase --include="$base_packages" \
      --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/var/cache/apt/*' \
      "$suite" "$tarball" || fail "mmdebstrap $suite failed"
    podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null \
      || fail "podman import of the $suite base failed"
    rm -f "$tarball"
  fi
fi

variant="${TORCH_VARIANT:-}"
needs_torch=0
for name in "${names[@]}"; do [ "$name" = operator ] || needs_torch=1; done
if [ -z "$variant" ] && [ "$needs_torch" = 0 ]; then
  variant=none
elif [ -z "$variant" ]; then
  if curl -fsS --max-time 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
    variant=cpu
  else
    variant=cuda
    log "PyTorch's CPU wheel index is unreachable: torch comes from PyPI (with CUDA libraries)"
  fi
fi

# pip inside a build trusts the host's CA bundle (a TLS-inspecting proxy's CA is in it).
ca=/etc/ssl/certs/ca-certificates.crt
mounts=()
[ -f "$ca" ] && mounts=(--volume "$ca:$ca:ro")
# What an image is built from: its Dockerfile, the context directories its COPY lines read
# (without caches), the base image's ID and the build arguments. podman's own layer cache
# still hashes every COPY source (a minute for the torch images' 5 GB), so an image whose
# label already carries this digest is not handed to podman at all; an operator change
# leaves the torch images alone.
sources_of() {
  awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) { split($i, p, "/"); print p[1] } }' \
    "$(dockerfile_of "$1")" | sort -u
}
inputs_of() {
  local name="$1" base_id sources
  base_id="$(podman image inspect --format '{{.Id}}' "$base")"
  mapfile -t sources < <(sources_of "$name")
  { cat "$(dockerfile_of "$name")" "$root/.dockerignore"
    printf '%s %s %s\n' "$base_id" "$variant" "$name"
    tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.mypy_cache \
      -cf - "${sources[@]}"
  } | sha256sum | cut -c1-16
}
label=dev.modelloop.inputs
for name in "${names[@]}"; do
  step="build $name"
  tag="$(tag_of "$name")"
  inputs="$(inputs_of "$name")"
  if [ "$(podman image inspect --format "{{index .Labels \"$label\"}}" "$tag" 2>/dev/null)" = "$inputs" ]; then
    log "$tag is up to date (inputs $inputs)"
    continue
  fi
  started=$(date +%s)
  log "building $tag (base $base$([ "$name" = operator ] || echo ", torch $variant"))"
  podman build --quiet --layers --pull=never "${mounts[@]}" \
    --build-arg "PYTHON_IMAGE=$base" --build-arg "VARIANT=$variant" \
    --label "$label=$inputs" \
    --file "$(dockerfile_of "$name")" --tag "$tag" "$root" >/dev/null \
    || fail "podman build -f $(dockerfile_of "$name") failed (the build's output is above)"
  size="$(podman image inspect --format '{{.Size}}' "$tag")"
  log "built $tag in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB"
done
