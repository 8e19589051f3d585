#!/usr/bin/env python3
"""Writes the seeds of the session_actions fuzz target for bridges the application destroys
(`Session::bridge_destroyed`) or creates again (`Session::forget_ended`):

    python3 fuzz/seed_session_bridge.py

Those actions sit behind a marker byte (`Action::More`, see fuzz/src/checks.rs) that random
mutation rarely produces, so the fuzzer starts from these scenarios; `cargo test` replays them
(ari-proto/tests/fuzz_replay.rs). The bytes are what `arbitrary` 1.x decodes into a `Config`
and a `Vec<Action>`: integers little-endian, `bool` the low bit of a byte, `Option` a `bool`
then the value, an enum variant a `u32` scaled by the number of variants, and each element of
the action list preceded by a byte whose low bit says that one follows. Files are named
`seed-bridge-<sha1 of the content>`.
"""
import hashlib
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus" / "session_actions"

# Variant counts and indices, in the order of fuzz/src/checks.rs.
ACTIONS = 15
START, CONNECTED, EVENT, ADVANCE, FIRE, SUBSCRIBE, STOP, MORE = 0, 2, 5, 8, 9, 10, 1, 14
TEMPLATES = 14
T_BRIDGE_DESTROYED, T_ENTERED, T_STASIS_END = 3, 4, 13
BRIDGE_ACTION = 0xB7  # the marker byte after `Action::More`
BRIDGE_ACTIONS = 3
DESTROYED, FORGET, BRIDGE_EVENT = 0, 1, 2
BRIDGE_TEMPLATES = 3
LEFT, CREATED, DESTROYED_EVENT = 0, 1, 2
# Indices into IDS.
C1, B1 = 0, 3
# SubSpec.kind: 1 + index in [Channel, Bridge, ...].
KIND_BRIDGE = 2
# Index into TYPES.
TYPE_BRIDGE_DESTROYED = 3


def variant(index, count):
    """A u32 that the derived `Arbitrary` maps to variant `index` of `count`."""
    x = (index * 2**32 + count - 1) // count
    assert (x * count) >> 32 == index
    return struct.pack("<I", x)


def config(linger_ms):
    seed = (1 << 60) | (1 << 52) | (linger_ms << 40)  # depth 32, linger on
    return b"".join([
        b"\x00",                       # keepalive: None
        b"\x00",                       # max_attempts: None
        struct.pack("<HH", 100, 1000),  # initial/max reconnect delay
        bytes([0, 20]),                # jitter %, multiplier tenths
        struct.pack("<HHH", 1000, 30000, 0xFFFF),  # stable_after, request timeout, frame max
        bytes([8, 31, 0, 0]),          # max_pending, max_queued, subscribe_all, api_key
        struct.pack("<Q", seed),
    ])


def act(index, payload=b""):
    return b"\x01" + variant(index, ACTIONS) + payload


def more(index, payload=b""):
    return act(MORE, bytes([BRIDGE_ACTION]) + variant(index, BRIDGE_ACTIONS) + payload)


def start():
    return act(START) + act(CONNECTED)


def subscribe(kind, rid, event_type=None, once=False):
    t = b"\x00" if event_type is None else b"\x01" + bytes([event_type])
    return act(SUBSCRIBE, bytes([kind, rid]) + t + bytes([int(once)]))


def advance(ms):
    return act(ADVANCE, struct.pack("<H", ms))


def destroy(b):
    return more(DESTROYED, bytes([b]))


def forget(b):
    return more(FORGET, bytes([b]))


def bridge_event(index, *ids):
    return more(BRIDGE_EVENT, variant(index, BRIDGE_TEMPLATES) + bytes(ids))


def event(index, *ids):
    return act(EVENT, variant(index, TEMPLATES) + bytes(ids))


SCENARIOS = [
    # No BridgeDestroyed comes: a ChannelLeftBridge restarts the linger, which then ends the
    # bridge's subscriptions; a later one ends at once, until forget_ended.
    [start(), subscribe(KIND_BRIDGE, B1),
     subscribe(KIND_BRIDGE, B1, TYPE_BRIDGE_DESTROYED, once=True),
     destroy(B1), advance(600), bridge_event(LEFT, B1, C1), advance(600), act(FIRE),
     subscribe(KIND_BRIDGE, B1), forget(B1), subscribe(KIND_BRIDGE, B1), act(STOP)],
    # BridgeDestroyed during the linger ends it; destroying again changes nothing.
    [start(), subscribe(KIND_BRIDGE, B1), destroy(B1), advance(300),
     event(T_ENTERED, B1, C1), event(T_BRIDGE_DESTROYED, B1), act(FIRE), destroy(B1),
     forget(B1), forget(B1)],
    # Destroyed twice (the deadline stays); then, created again: BridgeCreated stops the
    # next linger, forget_ended the one after; the last one outlives stop().
    [start(), subscribe(KIND_BRIDGE, B1), destroy(B1), advance(500), destroy(B1),
     advance(600), forget(B1), subscribe(KIND_BRIDGE, B1), destroy(B1),
     bridge_event(CREATED, B1), advance(1500), destroy(B1), forget(B1), advance(2000),
     destroy(B1), event(T_STASIS_END, C1), act(STOP)],
]


def main():
    CORPUS.mkdir(parents=True, exist_ok=True)
    for s in SCENARIOS:
        data = config(1000) + b"".join(s)
        (CORPUS / ("seed-bridge-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


if __name__ == "__main__":
    main()
