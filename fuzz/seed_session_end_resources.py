#!/usr/bin/env python3
"""Writes the seeds of the session_actions fuzz target for resources gone without an event
(`Session::end_resources`: a cluster node whose Asterisk restarted):

    python3 fuzz/seed_session_end_resources.py

That action sits behind a marker byte (`Action::More`, see fuzz/src/checks.rs) that random
mutation rarely produces, so the fuzzer starts from these scenarios; `cargo test` replays them
(ari-proto/tests/fuzz_replay.rs). The encoding is the one of fuzz/seed_session_bridge.py,
whose helpers this uses. Files are named `seed-endresources-<sha1 of the content>`.
"""
import hashlib

from seed_session_bridge import (
    B1, C1, CORPUS, FIRE, KIND_BRIDGE, MORE, STOP, T_STASIS_END, act, advance, config,
    destroy, event, start, subscribe,
)
from seed_session_not_created import (
    KIND_CHANNEL, KIND_PLAYBACK, NC_BRIDGE, NC_CHANNEL, NC_PLAYBACK, P1, T_DTMF,
    T_STASIS_START, TYPE_STASIS_START,
)

END_RESOURCES_ACTION = 0xE3  # the marker byte after `Action::More`


def end_resources(*resources):
    """`Session::end_resources` of up to three (NotCreated kind, IDS index) pairs."""
    padded = list(resources) + [(0, 0)] * (3 - len(resources))
    return act(MORE, bytes([END_RESOURCES_ACTION])
               + b"".join(bytes([k, r]) for k, r in padded) + bytes([len(resources)]))


SCENARIOS = [
    # A node's Asterisk restarted: its channel, bridge and playback end (every subscription,
    # the one-shot one too); a later subscription to them ends at once, and a later event of
    # the channel reaches no subscription.
    [start(), subscribe(KIND_CHANNEL, C1, TYPE_STASIS_START, once=True),
     subscribe(KIND_CHANNEL, C1), subscribe(KIND_BRIDGE, B1), subscribe(KIND_PLAYBACK, P1),
     end_resources((NC_CHANNEL, C1), (NC_BRIDGE, B1), (NC_PLAYBACK, P1)),
     subscribe(KIND_CHANNEL, C1), event(T_STASIS_START, C1), end_resources((NC_CHANNEL, C1)),
     act(STOP)],
    # During lingers: a channel that left Stasis and a bridge the application destroyed end
    # now, and their lingers stop (nothing left to end when they would have run out).
    [start(), subscribe(KIND_CHANNEL, C1), event(T_STASIS_END, C1), subscribe(KIND_BRIDGE, B1),
     destroy(B1), advance(300), end_resources((NC_BRIDGE, B1), (NC_CHANNEL, C1)),
     advance(1500), act(FIRE), event(T_DTMF, C1), subscribe(KIND_BRIDGE, B1), end_resources(),
     act(STOP)],
]


def main():
    CORPUS.mkdir(parents=True, exist_ok=True)
    for s in SCENARIOS:
        data = config(1000) + b"".join(s)
        (CORPUS / ("seed-endresources-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


if __name__ == "__main__":
    main()
