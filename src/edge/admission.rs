//! How many connections the edge holds open, in all and per client: a connection is admitted
//! with a [`ConnectionPermit`] that counts it until it is dropped, and refused while either
//! count is at its cap, so that no single client can take every file descriptor.
//!
//! Clients are counted by IP address, IPv6 ones by their /64 network (one host usually has a
//! whole /64 to pick addresses from).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// The connection caps and the counts they apply to.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    /// Open connections per client; a client is removed when its last connection closes.
    per_client: DashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it (when the connection ends) frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_client,
            total: AtomicUsize::new(0),
            per_client: DashMap::new(),
        })
    }

    /// Whether a connection from `client` would be admitted now. A hint for refusing early
    /// (before a TLS handshake); [`ConnectionLimits::admit`] decides.
    pub fn has_room(&self, client: Option<IpAddr>) -> bool {
        self.total.load(Ordering::Acquire) < self.max_total
            && client.is_none_or(|ip| {
                self.per_client
                    .get(&client_key(ip))
                    .is_none_or(|count| *count < self.max_per_client)
            })
    }

    /// Counts a connection from `client` (an unknown client counts in the total only), or
    /// `None` when the total or the client's count is at its cap.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Option<ConnectionPermit> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .ok()?;
        let client = client.map(client_key);
        if let Some(ip) = client {
            let mut count = self.per_client.entry(ip).or_insert(0);
            if *count >= self.max_per_client {
                drop(count);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *count += 1;
        }
        Some(ConnectionPermit {
            limits: Arc::clone(self),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.client {
            let per_client = &self.limits.per_client;
            let emptied = per_client.get_mut(&ip).is_some_and(|mut count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
            if emptied {
                per_client.remove_if(&ip, |_, count| *count == 0);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a client is counted under: IPv4 (also when mapped into IPv6) as it is, IPv6 by
/// its /64 network.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_client_at_its_cap_is_refused_and_others_are_not() {
        let limits = ConnectionLimits::new(10, 2);
        let first = limits.admit(ip("10.0.0.1")).unwrap();
        let _second = limits.admit(ip("10.0.0.1")).unwrap();
        assert!(!limits.has_room(ip("10.0.0.1")));
        assert!(limits.admit(ip("10.0.0.1")).is_none());
        assert!(limits.has_room(ip("10.0.0.2")));
        let _other = limits.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.open(), 3);
        drop(first);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn the_total_cap_applies_to_every_client() {
        let limits = ConnectionLimits::new(2, 2);
        let _a = limits.admit(ip("10.0.0.1")).unwrap();
        let _b = limits.admit(None).unwrap();
        assert!(!limits.has_room(ip("10.0.0.3")));
        assert!(limits.admit(ip("10.0.0.3")).is_none());
        assert!(limits.admit(None).is_none());
        // A refusal by the per-client cap gives its place in the total back.
        let limits = ConnectionLimits::new(2, 1);
        let _a = limits.admit(ip("10.0.0.1")).unwrap();
        assert!(limits.admit(ip("10.0.0.1")).is_none());
        assert!(limits.admit(ip("10.0.0.2")).is_some());
    }

    #[test]
    fn a_client_is_forgotten_with_its_last_connection() {
        let limits = ConnectionLimits::new(10, 5);
        let permits: Vec<_> = (0..3).map(|_| limits.admit(ip("10.0.0.1"))).collect();
        assert_eq!(limits.per_client.len(), 1);
        drop(permits);
        assert!(limits.per_client.is_empty());
        assert_eq!(limits.open(), 0);
    }

    #[test]
    fn ipv6_clients_count_per_64_network_and_mapped_ipv4_as_ipv4() {
        let limits = ConnectionLimits::new(10, 1);
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(limits.admit(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limits.admit(ip("2001:db8:1:3::1")).is_some());
        let _v4 = limits.admit(ip("192.0.2.7")).unwrap();
        assert!(limits.admit(ip("::ffff:192.0.2.7")).is_none());
    }
}
