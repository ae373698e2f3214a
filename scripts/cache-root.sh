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
