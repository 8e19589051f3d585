#!/usr/bin/env bash
# Fails if tokio (or any tokio-* crate) is in ari-smol's normal dependency tree, on any target,
# with all features. Run from the workspace root: `bash ari-smol/scripts/check-no-tokio.sh`.
set -euo pipefail
tree=$(cargo tree -p ari-smol -e normal --all-features --target all --prefix none --format '{p}')
if grep -E '^tokio([- ]|$)' <<<"$tree"; then
    echo "FAIL: tokio is in ari-smol's dependency tree:" >&2
    cargo tree -p ari-smol -e normal --all-features --target all -i tokio >&2 || true
    exit 1
fi
echo "ok: no tokio in ari-smol's dependency tree ($(wc -l <<<"$tree") crates checked)"
