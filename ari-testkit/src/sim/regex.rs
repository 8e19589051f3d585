//! Minimal regex (test support).
