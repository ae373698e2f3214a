# Sourced by the project's scripts: `hardy_cache_root` prints Hardy's cache directory as
# engine::provision::cache_root() finds it, so scripts and the binary share one cache:
# HARDY_CACHE_DIR when set and non-empty, else dirs::cache_dir()/hardy (XDG_CACHE_HOME if
# absolute, else ~/.cache; ~/Library/Caches on macOS).
hardy_cache_root() {
  if [ -n "${HARDY_CACHE_DIR:-}" ]; then
    echo "$HARDY_CACHE_DIR"
  elif [ "$(uname -s)" = Darwin ]; then
    echo "$HOME/Library/Caches/hardy"
  elif [ -n "${XDG_CACHE_HOME:-}" ] && [ "${XDG_CACHE_HOME#/}" != "$XDG_CACHE_HOME" ]; then
    echo "$XDG_CACHE_HOME/hardy"
  else
    echo "$HOME/.cache/hardy"
  fi
}

# `hardy_cache_claim DIR` (for an environment made once into DIR, complete when DIR/.complete
# exists): prints DIR and returns 1 when it is complete, for the caller to exit; otherwise
# takes DIR's lock (held on fd 9 until the script exits, so parallel first runs make it once),
# looks again, and returns 0 when DIR is still to be made.
hardy_cache_claim() {
  if [ -f "$1/.complete" ]; then
    echo "$1"
    return 1
  fi
  mkdir -p "$(dirname "$1")"
  if command -v flock >/dev/null; then # Linux; elsewhere parallel first runs are not guarded
    exec 9>"$1.lock"
    flock 9
  fi
  if [ -f "$1/.complete" ]; then # another process finished it while we waited
    echo "$1"
    return 1
  fi
}
