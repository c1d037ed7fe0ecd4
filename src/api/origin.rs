//! How clients reach this registry, for the absolute URLs it sends in `Location` headers:
//! the request's `Host`, or what a trusted proxy in front says through `X-Forwarded-Proto`
//! and `X-Forwarded-Host` (a gateway or TLS terminator knows the scheme and host the client
//! used; anyone else could lie about them); and who the client is, for sign-in throttling and
//! the audit log: the peer, or the address a trusted proxy put in `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri, header};
use ipnet::IpNet;

use super::AppState;

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks.into())
    }

    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|network| network.contains(&peer))
    }
}

/// `path` as an absolute URL on the origin the client used: `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (first entry of each) when `peer` is a trusted proxy, else `http` and
/// the request's host (the absolute request-target's, or `Host`). Without a usable host the
/// path is returned as it is: a relative `Location` is still valid HTTP.
pub fn absolute_url(
    uri: &Uri,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &TrustedProxies,
    path: &str,
) -> String {
    let forwarded = |name: &str| {
        peer.filter(|&peer| trusted.contains(peer))
            .and_then(|_| first_value(headers, name))
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .and_then(authority)
        .or_else(|| uri.authority().cloned())
        .or_else(|| first_value(headers, header::HOST.as_str()).and_then(authority));
    match host {
        Some(host) => format!("{scheme}://{host}{path}"),
        None => path.to_owned(),
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy that says in
/// `X-Forwarded-For` for whom it asks. Read from the right, the first address that is not a
/// trusted proxy's is the client (what a client put further left itself is not believed); a
/// chain of trusted proxies only ends at its leftmost entry.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let listed: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in listed.iter().rev() {
        // Past an entry that is no address nothing can be told.
        let Ok(hop) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = hop;
        if !trusted.contains(hop) {
            break;
        }
    }
    client
}

/// The client's address of a request, as an extractor ([`client_address`]); `None` when the
/// connection's address is unknown (a test's in-process request).
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<ClientAddress, Self::Rejection> {
        Ok(ClientAddress(client_of(parts, &state.trusted_proxies)))
    }
}

/// [`client_address`] of a request's head.
pub fn client_of(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())?;
    Some(client_address(peer, &parts.headers, trusted))
}

/// The first entry of a header that proxies may extend with `, `.
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// `host[:port]`, refusing anything else a header could smuggle into a URL (paths, user info).
fn authority(value: &str) -> Option<Authority> {
    let authority: Authority = value.parse().ok()?;
    (!authority.as_str().contains('@')).then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let client = |peer: &str, forwarded: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in forwarded {
                headers.append("x-forwarded-for", value.parse().unwrap());
            }
            client_address(peer.parse().unwrap(), &headers, &trusted).to_string()
        };
        assert_eq!(
            client("203.0.113.9", &["198.51.100.1"]),
            "203.0.113.9",
            "an untrusted peer's claim is ignored"
        );
        assert_eq!(client("10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(client("10.0.0.2", &["198.51.100.1"]), "198.51.100.1");
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 198.51.100.1, 10.0.0.3"]),
            "198.51.100.1",
            "what the client wrote on the left is not believed"
        );
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6", "198.51.100.1"]),
            "198.51.100.1"
        );
        assert_eq!(client("10.0.0.2", &["10.0.0.5, 10.0.0.3"]), "10.0.0.5");
        assert_eq!(client("10.0.0.2", &["not-an-ip, 10.0.0.3"]), "10.0.0.3");
        assert_eq!(client("10.0.0.2", &["2001:db8::7"]), "2001:db8::7");
    }

    fn url(uri: &str, headers: &[(&str, &str)], peer: &str, trusted: &[&str]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let trusted = TrustedProxies::new(trusted.iter().map(|n| n.parse().unwrap()).collect());
        absolute_url(
            &uri.parse().unwrap(),
            &map,
            Some(peer.parse().unwrap()),
            &trusted,
            "/v2/a/blobs/uploads/1",
        )
    }

    const PROXY: &[&str] = &["10.0.0.0/8"];

    #[test]
    fn the_host_header_makes_the_url_absolute() {
        assert_eq!(
            url(
                "/v2/",
                &[("host", "registry.example:5000")],
                "192.0.2.1",
                PROXY
            ),
            "http://registry.example:5000/v2/a/blobs/uploads/1"
        );
        assert_eq!(
            url(
                "http://direct.example/v2/",
                &[("host", "other")],
                "192.0.2.1",
                PROXY
            ),
            "http://direct.example/v2/a/blobs/uploads/1",
            "an absolute request-target wins over Host (RFC 9112 §3.2.2)"
        );
        assert_eq!(
            url("/v2/", &[], "192.0.2.1", PROXY),
            "/v2/a/blobs/uploads/1",
            "no host: relative"
        );
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let headers = [
            ("host", "core-1:5000"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "registry.example, gateway.internal"),
        ];
        assert_eq!(
            url("/v2/", &headers, "10.1.2.3", PROXY),
            "https://registry.example/v2/a/blobs/uploads/1"
        );
        assert_eq!(
            url("/v2/", &headers, "::ffff:10.1.2.3", PROXY),
            "https://registry.example/v2/a/blobs/uploads/1",
            "an IPv4 peer seen on a dual-stack socket"
        );
        assert_eq!(
            url("/v2/", &headers, "192.0.2.1", PROXY),
            "http://core-1:5000/v2/a/blobs/uploads/1"
        );
    }

    #[test]
    fn hosts_that_are_not_an_authority_are_ignored() {
        let forwarded = |host: &str| {
            url(
                "/v2/",
                &[("host", "core:5000"), ("x-forwarded-host", host)],
                "10.0.0.1",
                PROXY,
            )
        };
        for bad in ["evil.example/x?", "user@evil.example", "a b", ""] {
            assert_eq!(
                forwarded(bad),
                "http://core:5000/v2/a/blobs/uploads/1",
                "{bad:?}"
            );
        }
        assert_eq!(
            url("/v2/", &[("host", "evil.example/x")], "192.0.2.1", PROXY),
            "/v2/a/blobs/uploads/1"
        );
    }
}
