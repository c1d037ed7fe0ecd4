//! How many connections a listener holds open, in all and per client: a connection is
//! admitted with a [`ConnectionPermit`] that counts it until it is dropped, and refused while
//! either count is at its cap, so that no single client can take every file descriptor. The
//! core's accept loop and the edge's both count with it.
//!
//! Clients are counted by IP address, IPv6 ones by their /64 network (one host usually has a
//! whole /64 to pick addresses from), IPv4-mapped IPv6 as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::telemetry::metrics;

/// The connection caps and the counts they apply to.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    /// A client is removed when its last connection closes.
    per_client: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyFromClient,
}

impl Refusal {
    /// The configuration key of the cap, as a metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "max_connections",
            Refusal::TooManyFromClient => "max_connections_per_client",
        }
    }
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
            open: Mutex::default(),
        })
    }

    fn open_connections(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why a connection from `client` would be refused now, if it would: a hint for refusing
    /// early (before a TLS handshake); [`ConnectionLimits::admit`] decides.
    pub fn refusal(&self, client: Option<IpAddr>) -> Option<Refusal> {
        let open = self.open_connections();
        if open.total >= self.max_total {
            return Some(Refusal::TooManyConnections);
        }
        let crowded = client.is_some_and(|ip| {
            open.per_client
                .get(&client_key(ip))
                .is_some_and(|count| *count >= self.max_per_client)
        });
        crowded.then_some(Refusal::TooManyFromClient)
    }

    /// Counts a connection from `client`; `None` counts in the total only (a trusted proxy
    /// carrying many clients, or a peer without an address).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<ConnectionPermit, Refusal> {
        let client = client.map(client_key);
        let mut open = self.open_connections();
        if open.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(ip) = client {
            let count = open.per_client.entry(ip).or_default();
            if *count >= self.max_per_client {
                return Err(Refusal::TooManyFromClient);
            }
            *count += 1;
        }
        open.total += 1;
        metrics().connections_open.inc();
        Ok(ConnectionPermit {
            limits: Arc::clone(self),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open_connections().total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open_connections();
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.client
            && let Some(count) = open.per_client.get_mut(&ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_client.remove(&ip);
            }
        }
        metrics().connections_open.dec();
    }
}

/// The address a client is counted under.
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
        assert_eq!(
            limits.refusal(ip("10.0.0.1")),
            Some(Refusal::TooManyFromClient)
        );
        assert_eq!(
            limits.admit(ip("10.0.0.1")).err(),
            Some(Refusal::TooManyFromClient)
        );
        assert_eq!(limits.refusal(ip("10.0.0.2")), None);
        let _other = limits.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.open(), 3);
        drop(first);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_total_cap_applies_to_every_client_and_to_uncounted_ones() {
        let limits = ConnectionLimits::new(2, 2);
        let _a = limits.admit(ip("10.0.0.1")).unwrap();
        let _b = limits.admit(None).unwrap();
        assert_eq!(
            limits.refusal(ip("10.0.0.3")),
            Some(Refusal::TooManyConnections)
        );
        assert_eq!(
            limits.admit(ip("10.0.0.3")).err(),
            Some(Refusal::TooManyConnections)
        );
        assert_eq!(limits.admit(None).err(), Some(Refusal::TooManyConnections));
        // A refusal by the per-client cap takes no place in the total.
        let limits = ConnectionLimits::new(2, 1);
        let _a = limits.admit(ip("10.0.0.1")).unwrap();
        assert!(limits.admit(ip("10.0.0.1")).is_err());
        assert!(limits.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn a_client_is_forgotten_with_its_last_connection() {
        let limits = ConnectionLimits::new(10, 5);
        let permits: Vec<_> = (0..3).map(|_| limits.admit(ip("10.0.0.1"))).collect();
        assert_eq!(limits.open_connections().per_client.len(), 1);
        drop(permits);
        assert!(limits.open_connections().per_client.is_empty());
        assert_eq!(limits.open(), 0);
    }

    #[test]
    fn ipv6_clients_count_per_64_network_and_mapped_ipv4_as_ipv4() {
        let limits = ConnectionLimits::new(10, 1);
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(limits.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(limits.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = limits.admit(ip("192.0.2.7")).unwrap();
        assert!(limits.admit(ip("::ffff:192.0.2.7")).is_err());
    }
}
