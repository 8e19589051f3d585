#!/usr/bin/env bash
# Runs the hello-world IVR of node-ari-client's README (installed from npm) against ari-mock,
# then bench.js: node-ari-client as a benchmark consumer of the /_bench/ control contract.
#
# usage: ari-testkit/node-interop/run.sh [SPEC_DIR]
#   SPEC_DIR  ARI spec directory (resources.json + api-docs/); default $ARI_SPEC_DIR, else
#             ../shared/ari-spec/asterisk-master relative to the repository root.
# env: ARI_MOCK (a prebuilt ari-mock binary; default: cargo build), NODE_ARI_CLIENT_VERSION
#      (default 2.2.0), IVR_DTMF (default '12#').
# Exits 0 only if the IVR ran to the end (see hello.js) and both floods arrived complete
# (see bench.js).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
spec=${1:-${ARI_SPEC_DIR:-$root/../shared/ari-spec/asterisk-master}}
version=${NODE_ARI_CLIENT_VERSION:-2.2.0}
dtmf=${IVR_DTMF:-12#}

if [[ ! -f "$spec/resources.json" ]]; then
  echo "node-interop: no ARI spec at $spec (pass SPEC_DIR or set ARI_SPEC_DIR)" >&2
  exit 2
fi
spec=$(cd "$spec" && pwd)

work=$(mktemp -d)
mock_pid=""
cleanup() {
  if [[ -n "$mock_pid" ]]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "node-interop: installing ari-client@$version from npm"
(cd "$work" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error "ari-client@$version" >"$work/npm.log" 2>&1) || {
  cat "$work/npm.log" >&2; echo "node-interop: npm install failed" >&2; exit 1; }
cp "$here/hello.js" "$here/bench.js" "$work/"

if [[ -z "${ARI_MOCK:-}" ]]; then
  (cd "$root" && cargo build -q -p ari-testkit --bin ari-mock)
  ARI_MOCK="$(cd "$root" && cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')/debug/ari-mock"
fi

"$ARI_MOCK" --port 0 --api-docs "$spec" >"$work/mock.log" 2>&1 &
mock_pid=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^ari-mock listening on http:\/\/127\.0\.0\.1:\([0-9]*\)\/ari.*/\1/p' "$work/mock.log" | head -n1)
  [[ -n "$port" ]] && break
  kill -0 "$mock_pid" 2>/dev/null || break
  sleep 0.05
done
if [[ -z "$port" ]]; then
  cat "$work/mock.log" >&2; echo "node-interop: ari-mock did not start" >&2; exit 1
fi
echo "node-interop: ari-mock on port $port"

status=0
(cd "$work" && node hello.js "http://127.0.0.1:$port" asterisk asterisk "$dtmf") || status=$?
if [[ $status -eq 0 ]]; then
  (cd "$work" && node bench.js "http://127.0.0.1:$port" asterisk asterisk) || status=$?
fi
if [[ $status -ne 0 ]]; then
  echo "---- ari-mock log ----" >&2; cat "$work/mock.log" >&2
  echo "node-interop: FAILED" >&2
  exit "$status"
fi
echo "node-interop: passed"
