#!/usr/bin/env bash
# Refresh the dashboard's vendored JS/CSS from the npm registry at the pinned versions.
#
#   scripts/vendor-dashboard-assets.sh          download, verify, copy into pgtasks/dashboard/static/vendor/
#   scripts/vendor-dashboard-assets.sh --check  download, verify, and fail if the committed files differ
#
# The dashboard has no JS build step, so these files are committed as they ship in each package's
# tarball. The integrity pins are checked against the tarball's own bytes rather than trusted from
# `npm view`: a republished or tampered tarball stops the refresh instead of slipping into the wheel.
# To move to a new version, change its VERSION and INTEGRITY here (the integrity from
# `npm view <package>@<version> dist.integrity`), run this script, and update vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

HTMX_VERSION=2.0.11
HTMX_INTEGRITY='sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=='
UPLOT_VERSION=1.6.32
UPLOT_INTEGRITY='sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=='

VENDOR=pgtasks/dashboard/static/vendor

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { echo "vendor-dashboard-assets: $*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch PACKAGE VERSION INTEGRITY: leaves the unpacked tarball in $work/PACKAGE/package/
fetch() {
    local package=$1 version=$2 pinned=$3 tarball actual
    # --ignore-scripts: packing a registry tarball runs no lifecycle scripts, but say so explicitly.
    tarball=$(cd "$work" && npm pack --silent --ignore-scripts "$package@$version")
    actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
    if [ "$actual" != "$pinned" ]; then
        log "$package@$version: integrity mismatch"
        log "  pinned:     $pinned"
        log "  downloaded: $actual"
        exit 1
    fi
    log "$package@$version: integrity ok"
    mkdir -p "$work/$package"
    tar -xzf "$work/$tarball" -C "$work/$package"
}

# place SOURCE DEST: copy, or under --check compare and remember a difference
stale=0
place() {
    local source=$1 dest=$2
    if [ "$check_only" = 1 ]; then
        if ! cmp -s "$source" "$dest"; then
            log "differs from the pinned tarball: $dest"
            stale=1
        fi
    else
        mkdir -p "$(dirname "$dest")"
        install -m 0644 "$source" "$dest"
    fi
}

fetch htmx.org "$HTMX_VERSION" "$HTMX_INTEGRITY"
htmx="$work/htmx.org/package"
place "$htmx/dist/htmx.min.js" "$VENDOR/htmx/htmx.min.js"
place "$htmx/LICENSE" "$VENDOR/htmx/LICENSE"

fetch uplot "$UPLOT_VERSION" "$UPLOT_INTEGRITY"
uplot="$work/uplot/package"
place "$uplot/dist/uPlot.iife.min.js" "$VENDOR/uplot/uPlot.iife.min.js"
place "$uplot/dist/uPlot.min.css" "$VENDOR/uplot/uPlot.min.css"
place "$uplot/LICENSE" "$VENDOR/uplot/LICENSE"

if [ "$check_only" = 1 ]; then
    [ "$stale" = 0 ] && log "the vendored files match the pinned tarballs"
    exit "$stale"
fi
log "copied into $VENDOR/"
