#!/usr/bin/env bash
# ari-smol runs no tokio runtime: no tokio reactor, threads or timers. hyper (the HTTP/1.1
# client in ari-client) depends on the `tokio` crate for its `sync` primitives only, which is
# acceptable. This fails if ari-smol's normal dependency tree (every target, default and all
# features) enables any tokio feature other than `sync` (and `default`, which is empty in
# tokio), or contains any tokio-* crate (tokio-util, tokio-rustls, tokio-tungstenite, ...).
# Run from the workspace root: `bash ari-smol/scripts/check-no-tokio-runtime.sh`.
set -euo pipefail
fail=0
for features in "" "--all-features"; do
    # shellcheck disable=SC2086 # $features is one flag or none
    tree=$(cargo tree -p ari-smol -e normal,features --target all $features --prefix none)
    bad_features=$(grep -oE '^tokio feature "[^"]+"' <<<"$tree" | sort -u \
        | grep -vE '^tokio feature "(sync|default)"$' || true)
    crates=$(grep -oE '^tokio-[a-z0-9_-]+ v[0-9][^ ]*' <<<"$tree" | sort -u || true)
    if [ -n "$bad_features" ] || [ -n "$crates" ]; then
        echo "FAIL (${features:-default features}): ari-smol pulls in a tokio runtime part:" >&2
        [ -n "$bad_features" ] && echo "$bad_features" >&2
        [ -n "$crates" ] && echo "$crates" >&2
        # shellcheck disable=SC2086
        cargo tree -p ari-smol -e normal,features --target all $features -i tokio >&2 || true
        fail=1
    fi
done
[ "$fail" -eq 0 ] || exit 1
used=$(cargo tree -p ari-smol -e normal,features --target all --prefix none \
    | grep -oE '^tokio feature "[^"]+"' | sort -u | tr '\n' ' ')
echo "ok: ari-smol has no tokio runtime (tokio features in its tree: ${used:-none})"
