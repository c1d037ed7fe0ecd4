//! A connection's deadline: the time it has for a request head, and for idling between
//! requests. Requests in flight suspend it, so no transfer is ever timed by it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The deadline a connection is under: while it waits for a request head, or idles between
/// requests. Requests in flight suspend it.
pub(super) struct ConnectionClock {
    header_read_timeout: Duration,
    keepalive_idle_timeout: Duration,
    waiting: Mutex<Waiting>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// For a complete request head, since the connection opened or the head's first byte came.
    Head { since: Instant },
    /// For the next request, since the last response ended.
    NextRequest { since: Instant },
    /// For requests in flight: no deadline.
    InFlight { requests: usize },
}

impl ConnectionClock {
    pub(super) fn new(
        header_read_timeout: Duration,
        keepalive_idle_timeout: Duration,
    ) -> ConnectionClock {
        ConnectionClock {
            header_read_timeout,
            keepalive_idle_timeout,
            waiting: Mutex::new(Waiting::Head {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.waiting() {
            Waiting::Head { since } => since.checked_add(self.header_read_timeout),
            Waiting::NextRequest { since } => since.checked_add(self.keepalive_idle_timeout),
            Waiting::InFlight { .. } => None,
        }
    }

    /// Bytes came in: on an idle connection they start the next request's head.
    pub(super) fn bytes_arrived(&self) {
        let mut waiting = self.waiting();
        if let Waiting::NextRequest { .. } = *waiting {
            *waiting = Waiting::Head {
                since: Instant::now(),
            };
            drop(waiting);
            self.changed.notify_waiters();
        }
    }

    /// A request head is complete; the returned guard ends the request when dropped.
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        let mut waiting = self.waiting();
        *waiting = match *waiting {
            Waiting::InFlight { requests } => Waiting::InFlight {
                requests: requests + 1,
            },
            _ => Waiting::InFlight { requests: 1 },
        };
        InFlight(Arc::clone(self))
    }

    fn request_ended(&self) {
        let mut waiting = self.waiting();
        *waiting = match *waiting {
            Waiting::InFlight { requests } if requests > 1 => Waiting::InFlight {
                requests: requests - 1,
            },
            _ => Waiting::NextRequest {
                since: Instant::now(),
            },
        };
        drop(waiting);
        self.changed.notify_waiters();
    }

    /// Resolves once the connection is past its deadline.
    pub(super) async fn expired(&self) {
        loop {
            // Registered before the state is read, so no change can slip between the two.
            let changed = self.changed.notified();
            match self.deadline() {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request in flight on a connection, from its complete head to the end of its response.
pub(super) struct InFlight(Arc<ConnectionClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_only_while_no_request_is_in_flight() {
        let clock = Arc::new(ConnectionClock::new(
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        let opened = Instant::now();
        assert_eq!(clock.deadline(), Some(opened + Duration::from_secs(10)));
        let request = clock.request_started();
        assert_eq!(
            clock.deadline(),
            None,
            "a request in flight has no deadline"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        drop(request);
        let idle = Instant::now();
        assert_eq!(clock.deadline(), Some(idle + Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.bytes_arrived();
        assert_eq!(
            clock.deadline(),
            Some(idle + Duration::from_secs(15)),
            "the next head has the header timeout from its first byte"
        );
        clock.bytes_arrived();
        assert_eq!(clock.deadline(), Some(idle + Duration::from_secs(15)));
        tokio::time::advance(Duration::from_secs(10)).await;
        clock.expired().await;
    }
}
