//! Scenario replay.
