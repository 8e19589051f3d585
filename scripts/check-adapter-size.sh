#!/usr/bin/env bash
# Issue 12: an adapter only runs tasks and moves bytes. Each adapter's src/ (examples aside)
# stays under 400 lines; everything above the bytes belongs to ari-client.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=400
status=0
for crate in ari-tokio ari-smol; do
    lines=$(find "$crate/src" -name "*.rs" -exec cat {} + | wc -l)
    if [ "$lines" -ge "$limit" ]; then
        echo "FAIL: $crate/src has $lines lines (limit: under $limit); move what is not runtime-specific to ari-client"
        status=1
    else
        echo "ok: $crate/src has $lines lines (under $limit)"
    fi
done
exit $status
