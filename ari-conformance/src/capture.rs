//! Captures `tracing` output of the whole process, to check that secrets never appear.
//!
//! A global subscriber (installed once, at `TRACE` level, on first use) formats every event
//! and span of every thread; each formatted line is checked against the secrets registered
//! with [`watch`] as it is written, and kept (bounded) for inspection. Global because the
//! client's tasks run on the adapter's threads, not the test's.

use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

const KEEP_LINES: usize = 20_000;

#[derive(Default)]
struct State {
    secrets: Vec<String>,
    /// Lines containing a secret.
    leaks: Vec<String>,
    /// Lines written since installation (bounded, oldest dropped).
    lines: std::collections::VecDeque<String>,
    total_lines: u64,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(State::default()))
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    state().lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy)]
struct Capture;

struct LineWriter {
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        let mut st = lock();
        for line in text.lines() {
            st.total_lines += 1;
            if st.secrets.iter().any(|s| line.contains(s.as_str())) {
                st.leaks.push(line.to_string());
            }
            if st.lines.len() >= KEEP_LINES {
                st.lines.pop_front();
            }
            st.lines.push_back(line.to_string());
        }
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { buf: Vec::new() }
    }
}

/// Installs the capturing global subscriber (once per process). Returns `false` if another
/// global subscriber was installed first (then nothing is captured).
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_target(true)
            .with_writer(Capture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

/// Registers secrets: every line written from now on that contains one is recorded as a
/// leak ([`leaks`]).
pub fn watch(secrets: &[&str]) {
    lock().secrets.extend(secrets.iter().map(|s| s.to_string()));
}

/// Lines that contained a watched secret.
pub fn leaks() -> Vec<String> {
    lock().leaks.clone()
}

/// How many lines were written since installation.
pub fn total_lines() -> u64 {
    lock().total_lines
}

/// Whether some kept line satisfies `pred`.
pub fn any_line(mut pred: impl FnMut(&str) -> bool) -> bool {
    lock().lines.iter().any(|l| pred(l))
}
