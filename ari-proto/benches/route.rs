//! Routing bench (placeholder).
fn main() {}
