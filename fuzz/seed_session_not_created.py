#!/usr/bin/env python3
"""Writes the seeds of the session_actions fuzz target for resources Asterisk refused to create
under the application's id (`Session::not_created`):

    python3 fuzz/seed_session_not_created.py

That action sits behind a marker byte (`Action::More`, see fuzz/src/checks.rs) that random
mutation rarely produces, so the fuzzer starts from these scenarios; `cargo test` replays them
(ari-proto/tests/fuzz_replay.rs). The encoding is the one of fuzz/seed_session_bridge.py,
whose helpers this uses. Files are named `seed-notcreated-<sha1 of the content>`.
"""
import hashlib

from seed_session_bridge import (
    B1, C1, CORPUS, FIRE, KIND_BRIDGE, MORE, STOP, T_STASIS_END, act, advance, config,
    destroy, event, start, subscribe,
)

NOT_CREATED_ACTION = 0x9C  # the marker byte after `Action::More`
# NotCreated.kind: index in [Channel, Bridge, Playback, Recording].
NC_CHANNEL, NC_BRIDGE, NC_PLAYBACK, NC_RECORDING = 0, 1, 2, 3
# SubSpec.kind: 1 + index in [Channel, Bridge, Playback, Recording, ...].
KIND_CHANNEL, KIND_PLAYBACK, KIND_RECORDING = 1, 3, 4
# Indices into IDS.
P1, REC1 = 4, 5
# Template indices and TYPES indices.
T_STASIS_START, T_CHANNEL_DESTROYED, T_DTMF, T_PLAYBACK_FINISHED = 0, 1, 2, 6
TYPE_STASIS_START = 0


def not_created(kind, rid):
    return act(MORE, bytes([NOT_CREATED_ACTION, kind, rid]))


SCENARIOS = [
    # An originate and a play refused: their waits end, the ids do not count as ended, and
    # a retry under the same ids is followed (its events routed, its end ends it).
    [start(), subscribe(KIND_CHANNEL, C1, TYPE_STASIS_START, once=True),
     subscribe(KIND_CHANNEL, C1), subscribe(KIND_PLAYBACK, P1),
     subscribe(KIND_RECORDING, REC1), not_created(NC_CHANNEL, C1),
     not_created(NC_CHANNEL, C1), subscribe(KIND_CHANNEL, C1), event(T_STASIS_START, C1),
     not_created(NC_PLAYBACK, P1), subscribe(KIND_PLAYBACK, P1),
     event(T_PLAYBACK_FINISHED, P1), not_created(NC_RECORDING, REC1),
     event(T_CHANNEL_DESTROYED, C1), not_created(NC_CHANNEL, C1), act(STOP)],
    # During lingers: a channel that left Stasis and a bridge the application destroyed lose
    # their subscriptions to not_created, and their lingers go on (the channel's event after
    # it, the bridge's end); then the ended ids stay ended.
    [start(), subscribe(KIND_CHANNEL, C1), event(T_STASIS_END, C1),
     not_created(NC_CHANNEL, C1), advance(600), event(T_DTMF, C1),
     subscribe(KIND_BRIDGE, B1), subscribe(KIND_BRIDGE, B1), destroy(B1),
     not_created(NC_BRIDGE, B1), advance(600), act(FIRE), subscribe(KIND_CHANNEL, C1),
     subscribe(KIND_BRIDGE, B1), not_created(NC_BRIDGE, B1), advance(1500), act(STOP)],
]


def main():
    CORPUS.mkdir(parents=True, exist_ok=True)
    for s in SCENARIOS:
        data = config(1000) + b"".join(s)
        (CORPUS / ("seed-notcreated-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


if __name__ == "__main__":
    main()
