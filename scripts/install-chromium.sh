#!/bin/sh
# Installs Debian's chromium and chromium-driver (the browser and its WebDriver) for the web
# console's browser test (tests/integration/console.rs). Idempotent: when both are already
# installed it only says where they are. Needs root or sudo, and apt with Debian's mirror.
set -eu

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "install-chromium.sh: chromium and chromium-driver are missing, and installing them needs root or sudo" >&2
    echo "  (as root: apt-get install chromium chromium-driver)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Other installers (the tests run side by side) may hold the dpkg lock: wait for it.
install() {
    $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
}
echo "install-chromium.sh: installing chromium and chromium-driver with apt-get" >&2
# A fresh machine's package lists may be empty or stale: update once when the first try fails.
if ! install >/dev/null; then
    $SUDO apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
    install >/dev/null
fi
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
    echo "install-chromium.sh: apt-get finished but chromium or chromedriver is not on PATH" >&2
    exit 1
}
