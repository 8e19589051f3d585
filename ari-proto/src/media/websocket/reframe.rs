//! Cutting the application's audio into whole frames.

use bytes::{Bytes, BytesMut};

/// Cuts audio chunks of any size into frames of exactly `frame_size` bytes, keeping the
/// sub-frame tail for the next chunk.
///
/// Outside buffering mode Asterisk cuts each binary message into `optimal_frame_size` chunks
/// and **discards the remainder**, so a message shorter than one frame is lost entirely. A
/// `Reframer` never produces such a message: the tail waits for more audio, and
/// [`take_tail`](Self::take_tail) hands it out only when the caller decides (at the end of a
/// buffered block, where Asterisk does play a short frame).
///
/// A frame size of 0 (passthrough mode) passes every chunk through unchanged.
///
/// ```
/// use ari_proto::media::websocket::Reframer;
/// use bytes::Bytes;
/// let mut r = Reframer::new(160);
/// let mut frames = Vec::new();
/// r.push(Bytes::from(vec![1u8; 100]), |f| frames.push(f));
/// assert!(frames.is_empty());
/// r.push(Bytes::from(vec![2u8; 300]), |f| frames.push(f));
/// assert_eq!(frames.iter().map(|f| f.len()).collect::<Vec<_>>(), [160, 160]);
/// assert_eq!(r.pending(), 80);
/// ```
#[derive(Debug, Clone)]
pub struct Reframer {
    frame_size: usize,
    tail: BytesMut,
}

impl Reframer {
    /// A reframer for frames of `frame_size` bytes (0: pass through).
    pub fn new(frame_size: usize) -> Reframer {
        Reframer {
            frame_size,
            tail: BytesMut::new(),
        }
    }

    /// The frame size.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Bytes held back (less than one frame).
    pub fn pending(&self) -> usize {
        self.tail.len()
    }

    /// Adds a chunk; calls `out` with each whole frame now complete, in order. Whole frames
    /// of a chunk that starts on a frame boundary are slices of it (no copy).
    pub fn push(&mut self, mut data: Bytes, mut out: impl FnMut(Bytes)) {
        if self.frame_size == 0 {
            if !data.is_empty() {
                out(data);
            }
            return;
        }
        if !self.tail.is_empty() {
            let need = self.frame_size - self.tail.len();
            if data.len() < need {
                self.tail.extend_from_slice(&data);
                return;
            }
            self.tail.extend_from_slice(&data[..need]);
            out(self.tail.split().freeze());
            data = data.slice(need..);
        }
        while data.len() >= self.frame_size {
            out(data.split_to(self.frame_size));
        }
        if !data.is_empty() {
            self.tail.extend_from_slice(&data);
        }
    }

    /// Takes the held-back tail, if any (a short frame).
    pub fn take_tail(&mut self) -> Option<Bytes> {
        (!self.tail.is_empty()).then(|| self.tail.split().freeze())
    }

    /// Drops the held-back tail; returns how many bytes it had.
    pub fn clear(&mut self) -> usize {
        let n = self.tail.len();
        self.tail.clear();
        n
    }
}
