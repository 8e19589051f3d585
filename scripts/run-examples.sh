#!/usr/bin/env bash
# Builds the examples of ari-tokio, ari-smol and ari-cluster once, runs each against the
# simulated Asterisk they embed (ARI_URL unset), and checks that each exits 0, prints the
# lines of its conversation, and that the smol version says the same as the tokio one.
#
# From the workspace root: `bash scripts/run-examples.sh` (exit 0 when all pass).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --examples -p ari-tokio -p ari-smol -p ari-cluster -p ari-proto
bin="${CARGO_TARGET_DIR:-target}/debug/examples"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
failures=0

fail() {
    echo "FAIL $1: $2" >&2
    sed 's/^/    /' "$out/$1.out" >&2
    failures=$((failures + 1))
}

# run NAME EXPECTED_LINE... : runs the example, checks its exit status and that each expected
# line (a fixed string, matched at the start of a line) is in its output.
run() {
    local name="$1"
    shift
    local start=$SECONDS rc=0
    env -u ARI_URL -u ARI_APP -u NATS_URL -u ARI_CALLS -u ARI_LISTEN -u ARI_CONNECTION timeout 60 "$bin/$name" >"$out/$name.out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "$name" "exit status $rc"
        return
    fi
    local line
    for line in "$@"; do
        if ! awk -v p="$line" 'index($0, p) == 1 { found = 1 } END { exit !found }' "$out/$name.out"; then
            fail "$name" "no line starting with '$line'"
            return
        fi
    done
    echo "ok   $name ($((SECONDS - start)) s)"
}

# same TOKIO SMOL: the two outputs agree apart from the first line (which names the runtime and
# the port) and client-side ids (UUIDs). Lines printed from concurrent tasks (listeners) or
# close in time may come in another order on a loaded machine: that is only noted.
same() {
    normalize() {
        tail -n +2 "$out/$1.out" |
            sed -E 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/<id>/g'
    }
    [ -s "$out/$1.out" ] && [ -s "$out/$2.out" ] || return 0 # already reported
    if diff <(normalize "$1") <(normalize "$2") >"$out/diff" 2>&1; then
        return 0
    fi
    if diff <(normalize "$1" | sort) <(normalize "$2" | sort) >/dev/null 2>&1; then
        echo "note $2 prints the same lines as $1 in another order:"
        sed 's/^/    /' "$out/diff"
        return 0
    fi
    echo "FAIL $2 does not print what $1 prints:" >&2
    sed 's/^/    /' "$out/diff" >&2
    failures=$((failures + 1))
}

hello=(
    "← StasisStart channel="
    "→ answer"
    "→ play sound:hello-world"
    "← PlaybackFinished sound:hello-world"
    "← ChannelDtmfReceived digit=1"
    "→ play sound:digits/1"
    "← PlaybackFinished sound:digits/1"
    "← ChannelDtmfReceived digit=*"
    "→ play sound:tt-monkeys"
    "← ChannelDtmfReceived digit=#"
    "→ play sound:vm-goodbye"
    "← PlaybackFinished sound:vm-goodbye"
    "→ hangup"
    "← StasisEnd"
)
bridge=(
    "→ originate PJSIP/alice"
    "→ originate PJSIP/bob"
    "← StasisStart PJSIP/alice"
    "← StasisStart PJSIP/bob"
    "→ create bridge"
    "→ add both channels to the bridge"
    "← ChannelEnteredBridge PJSIP/alice"
    "← ChannelEnteredBridge PJSIP/bob"
    "→ play sound:hello-world to the bridge"
    "← PlaybackFinished sound:hello-world"
    "→ hangup PJSIP/alice"
    "→ hangup PJSIP/bob"
    "← ChannelDestroyed PJSIP/alice"
    "← ChannelDestroyed PJSIP/bob"
    "→ destroy bridge"
    "← BridgeDestroyed"
)
originate=(
    "live subscriptions before: 0"
    "live subscriptions with listeners: 3"
    "→ originate PJSIP/alice as channel "
    "← ChannelStateChange state=Ringing"
    "← ChannelStateChange state=Up"
    "← StasisStart channel="
    "→ answer"
    "→ play sound:hello-world"
    "← PlaybackFinished sound:hello-world"
    "→ hangup"
    "← ChannelDestroyed cause=Normal Clearing"
    "live subscriptions after: 0"
)

media=(
    "← StasisStart channel="
    "→ answer"
    "→ media session format=slin16"
    "media format=slin16 frames_in="
)

run hello "hello on tokio" "${hello[@]}"
run hello_smol "hello on smol" "${hello[@]}"
run hello_blocking "hello_blocking on std (sans-IO core)" "${hello[@]}"

outbound=(
    "← StasisStart application=hello:<channel name>"
    "→ answer"
    "→ play sound:hello-world"
    "← PlaybackFinished sound:hello-world"
    "← ChannelDtmfReceived digit=#"
    "→ hangup"
    "← StasisEnd"
    "· 1 connection(s) accepted, 0 refused, REST over the outbound WebSocket"
)
run outbound "outbound on tokio" "${outbound[@]}"
run outbound_smol "outbound on smol" "${outbound[@]}"
same outbound outbound_smol
run bridge "bridge on tokio" "${bridge[@]}"
run bridge_smol "bridge on smol" "${bridge[@]}"
run originate "originate on tokio" "${originate[@]}"
run originate_smol "originate on smol" "${originate[@]}"
# ari-cluster: nats-server, two simulated nodes with a proxy each, two instances, four calls.
run cluster_hello \
    "call node-a-call-1 node node-a handled by instance " \
    "call node-a-call-2 node node-a handled by instance " \
    "call node-b-call-1 node node-b handled by instance " \
    "call node-b-call-2 node node-b handled by instance " \
    "4 calls done"
run media_echo "media_echo on tokio" "${media[@]}"
run media_echo_smol "media_echo on smol" "${media[@]}"
audiosocket=(
    "← StasisStart channel="
    "→ answer"
    "← AudioSocket connection uuid="
    "← StasisEnd (the caller hung up)"
    "→ AudioSocket hangup"
    "audiosocket uuid="
)
run audiosocket_echo "audiosocket_echo on tokio" "${audiosocket[@]}"
run audiosocket_echo_smol "audiosocket_echo on smol" "${audiosocket[@]}"
same hello hello_smol
same bridge bridge_smol
same originate originate_smol

if [ "$failures" -ne 0 ]; then
    echo "$failures example check(s) failed" >&2
    exit 1
fi
echo "all examples ran to completion"
