#!/bin/sh
# Make sure the command-line tools the tests need are on PATH, installing Debian's packages
# with apt-get when one is missing. Today: promtool (Debian's `prometheus` package), which
# tests/test_prometheus_rules.py uses to check and unit-test examples/prometheus/*.yml.
#
#   scripts/ensure-tools.sh                      # promtool: prints where it is, or installs it
#   scripts/ensure-tools.sh chromium:chromium    # TOOL:PACKAGE pairs instead (the card's browser test)
#
# Exit 0 with every tool present; otherwise one line on stderr saying what failed, exit 1.
# Cheap on purpose: --no-install-recommends (no node exporter, no docs), and `apt-get update`
# only when the package is unknown to apt or its listed files are gone (about 20 s in all
# here). Debian's policy-rc.d keeps the prometheus service from starting in containers;
# where it is not there, the service may start as Debian ships it.
set -u

# one at a time: parallel test workers (pytest -n 2) may call this together, and apt holds a lock
if [ -z "${EDGEFAIR_TOOLS_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
    EDGEFAIR_TOOLS_LOCKED=1 exec flock "${TMPDIR:-/tmp}/edgefair-ensure-tools.lock" sh "$0" "$@"
fi

need() {  # need TOOL PACKAGE
    tool=$1 package=$2
    if command -v "$tool" >/dev/null 2>&1; then
        echo "$tool: $(command -v "$tool")"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-tools: $tool is missing and there is no apt-get to install Debian's $package package" >&2
        return 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
            echo "ensure-tools: $tool is missing and installing Debian's $package package needs root (or sudo)" >&2
            return 1
        fi
    fi
    log=$(mktemp)
    if ! apt-cache show "$package" >/dev/null 2>&1; then
        $sudo apt-get update -qq -o DPkg::Lock::Timeout=300 >"$log" 2>&1
    fi
    install() {
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            --no-install-recommends "$package" >>"$log" 2>&1
    }
    # package lists that are there but stale name files the mirror no longer has: update once, retry
    if ! install && ! { $sudo apt-get update -qq -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 && install; }; then
        echo "ensure-tools: apt-get install $package failed: $(grep -m1 -E '^E:' "$log" || tail -n1 "$log")" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure-tools: installed Debian's $package package but $tool is still not on PATH" >&2
        return 1
    fi
    echo "$tool: $(command -v "$tool") (installed Debian's $package package)"
}

[ $# -gt 0 ] || set -- promtool:prometheus
status=0
for pair in "$@"; do
    need "${pair%%:*}" "${pair#*:}" || status=1
done
exit $status
