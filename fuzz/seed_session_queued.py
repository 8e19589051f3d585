#!/usr/bin/env python3
"""Writes the seeds of the session_actions fuzz target for playbacks and recordings queued on a
channel or bridge (`Session::queued_on`, `RequestParts::queued_on`), refusals decided late
(`Session::not_created_before`, `Session::next_subscription_id`) and stops of live recordings
(`RequestParts::stopped_recording`):

    python3 fuzz/seed_session_queued.py

Those actions sit behind a marker byte (`Action::More`, see fuzz/src/checks.rs) that random
mutation rarely produces, so the fuzzer starts from these scenarios; `cargo test` replays them
(ari-proto/tests/fuzz_replay.rs). The encoding is the one of fuzz/seed_session_bridge.py,
whose helpers this uses. Files are named `seed-queued-<sha1 of the content>`.
"""
import hashlib

from seed_session_bridge import (
    B1, C1, CORPUS, FIRE, KIND_BRIDGE, MORE, STOP, T_BRIDGE_DESTROYED, T_STASIS_END, act,
    advance, config, event, start, subscribe, variant,
)
from seed_session_not_created import (
    KIND_CHANNEL, KIND_PLAYBACK, KIND_RECORDING, NC_CHANNEL, NC_RECORDING, P1, REC1,
    T_CHANNEL_DESTROYED, T_PLAYBACK_FINISHED,
)

QUEUED_ACTION = 0x5A  # the marker byte after `Action::More`
QUEUED_ACTIONS = 3
QUEUED_ON, NOT_CREATED_BEFORE, STOPPED_RECORDING = 0, 1, 2
T_PLAYBACK_STARTED = 5


def queued(index, payload):
    return act(MORE, bytes([QUEUED_ACTION]) + variant(index, QUEUED_ACTIONS) + payload)


def queued_on(recording, rid, bridge, target):
    """`play`/`record` of `rid` on the channel (or bridge) `target` succeeded."""
    return queued(QUEUED_ON, bytes([int(recording), rid, int(bridge), target]))


def not_created_before(kind, rid, mark):
    """`not_created_before` with the `mark`-th known subscription id (or the next one)."""
    return queued(NOT_CREATED_BEFORE, bytes([kind, rid, mark]))


def stopped_recording(op, rid):
    return queued(STOPPED_RECORDING, bytes([op, rid, 0]))


def playback_started(p, target, bridge):
    return act(5, variant(T_PLAYBACK_STARTED, 14) + bytes([p, target, int(bridge)]))


SCENARIOS = [
    # Voicemail: a recording and a playback queued behind a prompt (queued twice: once);
    # the caller hangs up: their subscriptions, the one-shot one too, end as never started.
    # A later subscription to the recording stays (no longer queued).
    [start(), subscribe(KIND_RECORDING, REC1), subscribe(KIND_RECORDING, REC1, once=True),
     subscribe(KIND_PLAYBACK, P1), subscribe(KIND_CHANNEL, C1),
     queued_on(True, REC1, False, C1), queued_on(False, P1, False, C1),
     queued_on(True, REC1, False, C1), event(T_STASIS_END, C1),
     subscribe(KIND_RECORDING, REC1), event(T_CHANNEL_DESTROYED, C1), act(STOP)],
    # A started playback is no longer queued: the hangup leaves it, its end ends it. A
    # recording queued on a bridge ends when the bridge is destroyed.
    [start(), subscribe(KIND_PLAYBACK, P1), queued_on(False, P1, False, C1),
     subscribe(KIND_RECORDING, REC1), queued_on(True, REC1, True, B1),
     subscribe(KIND_BRIDGE, B1), playback_started(P1, C1, False),
     event(T_CHANNEL_DESTROYED, C1), event(T_PLAYBACK_FINISHED, P1),
     event(T_BRIDGE_DESTROYED, B1), act(STOP)],
    # A refusal decided late ends only the waits made before the mark; the next mark ends the
    # rest. Stops and cancels of live recordings name them; pause and get do not.
    [start(), subscribe(KIND_RECORDING, REC1), subscribe(KIND_RECORDING, REC1),
     not_created_before(NC_RECORDING, REC1, 1), subscribe(KIND_RECORDING, REC1),
     not_created_before(NC_RECORDING, REC1, 2), not_created_before(NC_RECORDING, REC1, 3),
     stopped_recording(0, REC1),
     stopped_recording(1, 9), stopped_recording(2, REC1), stopped_recording(3, 10),
     act(STOP)],
    # A channel that left Stasis: the older wait ends as not created, the newer one with the
    # linger.
    [start(), subscribe(KIND_CHANNEL, C1), subscribe(KIND_CHANNEL, C1),
     event(T_STASIS_END, C1), not_created_before(NC_CHANNEL, C1, 1), advance(1500),
     act(FIRE), act(STOP)],
]

# With `max_ended_ids` 3 (seed bits 36-39 set, 32-33 clear: see `Config::max_ended_ids`): four
# playbacks queued on four channels, the fourth beyond the limit (counted, not tracked); the
# four channels leave: three subscriptions end as never started, the fourth stays.
CHANNELS = [C1, 1, 2, 6]
PLAYBACKS = [P1, REC1, 7, 8]
CAPPED = [
    [start()]
    + [subscribe(KIND_PLAYBACK, p) for p in PLAYBACKS]
    + [queued_on(False, p, False, c) for p, c in zip(PLAYBACKS, CHANNELS)]
    + [event(T_STASIS_END, c) for c in CHANNELS]
    + [act(STOP)],
]


def capped_config(linger_ms):
    """`config(linger_ms)` with seed bits 36-39 set: `max_ended_ids` 3."""
    data = bytearray(config(linger_ms))
    data[-8:] = (int.from_bytes(data[-8:], "little") | (0xF << 36)).to_bytes(8, "little")
    return bytes(data)


def main():
    CORPUS.mkdir(parents=True, exist_ok=True)
    for cfg, scenarios in ((config(1000), SCENARIOS), (capped_config(1000), CAPPED)):
        for s in scenarios:
            data = cfg + b"".join(s)
            (CORPUS / ("seed-queued-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


if __name__ == "__main__":
    main()
