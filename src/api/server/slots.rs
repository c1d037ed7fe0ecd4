//! Open connections counted in all and per client, against their caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::api::origin::TrustedProxies;
use crate::telemetry::metrics;

/// Open connections, in all and per client, against their caps.
pub(super) struct ConnectionSlots {
    max_total: usize,
    max_per_client: usize,
    uncapped: TrustedProxies,
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    TooManyConnections,
    TooManyFromClient,
}

impl Refusal {
    pub(super) fn label(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "max_connections",
            Refusal::TooManyFromClient => "max_connections_per_client",
        }
    }
}

/// One open connection's place; dropping it frees the place.
pub(super) struct Slot {
    slots: Arc<ConnectionSlots>,
    /// `None` for an uncapped peer.
    client: Option<IpAddr>,
}

impl ConnectionSlots {
    pub(super) fn new(
        max_total: usize,
        max_per_client: usize,
        uncapped: TrustedProxies,
    ) -> ConnectionSlots {
        ConnectionSlots {
            max_total,
            max_per_client,
            uncapped,
            open: Mutex::default(),
        }
    }

    fn open(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let client = (!self.uncapped.contains(peer)).then(|| client_key(peer));
        let mut open = self.open();
        if open.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(client) = client {
            let count = open.per_client.entry(client).or_default();
            if *count >= self.max_per_client {
                return Err(Refusal::TooManyFromClient);
            }
            *count += 1;
        }
        open.total += 1;
        metrics().connections_open.inc();
        Ok(Slot {
            slots: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        open.total = open.total.saturating_sub(1);
        if let Some(client) = self.client
            && let Some(count) = open.per_client.get_mut(&client)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_client.remove(&client);
            }
        }
        metrics().connections_open.dec();
    }
}

/// The address a client is counted under: IPv4 as it is, IPv6 by its /64, which one host
/// usually holds whole.
fn client_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per_client: usize, uncapped: &[&str]) -> Arc<ConnectionSlots> {
        let uncapped = TrustedProxies::new(uncapped.iter().map(|n| n.parse().unwrap()).collect());
        Arc::new(ConnectionSlots::new(total, per_client, uncapped))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_per_client_and_in_all() {
        let slots = slots(3, 2, &[]);
        let a1 = slots.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = slots.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("192.0.2.1")).err(),
            Some(Refusal::TooManyFromClient)
        );
        let _b1 = slots.try_acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("192.0.2.3")).err(),
            Some(Refusal::TooManyConnections)
        );
        drop(a1);
        let _a3 = slots.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(slots.open().total, 3);
    }

    #[test]
    fn uncapped_peers_count_only_in_all() {
        let slots = slots(3, 1, &["10.0.0.0/8"]);
        let held: Vec<_> = (0..3)
            .map(|_| slots.try_acquire(ip("10.0.0.7")).unwrap())
            .collect();
        assert_eq!(
            slots.try_acquire(ip("10.0.0.7")).err(),
            Some(Refusal::TooManyConnections)
        );
        drop(held);
        assert_eq!(slots.open().total, 0);
        assert!(slots.open().per_client.is_empty());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let slots = slots(10, 1, &[]);
        let _first = slots.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::TooManyFromClient)
        );
        assert!(slots.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
