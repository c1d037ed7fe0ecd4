//! Read sizes shared out among the streams in flight: larger reads (or mapped windows) cost less
//! CPU per GiB, but each stream holds a few of them while hyper or pingora writes them out, so a
//! fixed large size would let memory grow with the number of downloads. A [`ReadBudget`] gives
//! each new stream `budget / streams in flight` bytes per read, within fixed bounds: a few
//! downloads read large steps, hundreds read small ones.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{Stream, StreamExt};

/// A budget of read bytes and the streams currently counted against it. Meant to be a
/// `static`, one for each kind of stream that shares it.
pub struct ReadBudget {
    total: u64,
    min_step: u64,
    max_step: u64,
    streams: AtomicU64,
}

impl ReadBudget {
    /// `total` bytes shared out in steps of `min_step..=max_step` bytes.
    pub const fn new(total: u64, min_step: u64, max_step: u64) -> Self {
        Self {
            total,
            min_step,
            max_step,
            streams: AtomicU64::new(0),
        }
    }

    /// Counts one more stream; returns its share (counted until dropped) and its read step,
    /// fixed for the stream's life.
    pub fn start(&'static self) -> (ReadShare, usize) {
        let streams = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        (ReadShare(self), self.step(streams))
    }

    /// The step of a stream started while `streams` were in flight (itself included).
    pub fn step(&self, streams: u64) -> usize {
        let step = (self.total / streams.max(1)).clamp(self.min_step, self.max_step);
        // Read steps are buffer sizes, far below usize::MAX on any target this builds for.
        usize::try_from(step).unwrap_or(usize::MAX)
    }
}

/// One stream counted against a [`ReadBudget`] while it lives.
pub struct ReadShare(&'static ReadBudget);

impl ReadShare {
    /// `stream`, with this share counted until the stream is dropped.
    pub fn attach<S: Stream>(self, stream: S) -> impl Stream<Item = S::Item> {
        stream.map(move |item| {
            let _counted = &self;
            item
        })
    }
}

impl Drop for ReadShare {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    static BUDGET: ReadBudget = ReadBudget::new(32 * 1024 * KIB, 128 * KIB, 512 * KIB);

    #[test]
    fn steps_share_the_budget_within_their_bounds() {
        let kib = |n: u64| (n * KIB) as usize;
        assert_eq!(BUDGET.step(0), kib(512));
        assert_eq!(BUDGET.step(1), kib(512));
        assert_eq!(BUDGET.step(64), kib(512));
        assert_eq!(BUDGET.step(128), kib(256));
        assert_eq!(BUDGET.step(256), kib(128));
        assert_eq!(BUDGET.step(10_000), kib(128));
    }

    #[tokio::test]
    async fn a_stream_is_counted_until_it_is_dropped() {
        static COUNTED: ReadBudget = ReadBudget::new(1024, 1, 1024);
        let (first, step) = COUNTED.start();
        assert_eq!(step, 1024);
        let (second, step) = COUNTED.start();
        assert_eq!(step, 512);
        let stream = second.attach(futures_util::stream::iter([1, 2]));
        drop(first);
        assert_eq!(COUNTED.streams.load(Ordering::Relaxed), 1);
        assert_eq!(stream.collect::<Vec<_>>().await, [1, 2]);
        assert_eq!(COUNTED.streams.load(Ordering::Relaxed), 0);
    }
}
