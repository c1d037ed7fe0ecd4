//! How clients reach this registry, for the absolute URLs it sends in `Location` headers:
//! the request's `Host`, or what a trusted proxy in front says through `X-Forwarded-Proto`
//! and `X-Forwarded-Host` (a gateway or TLS terminator knows the scheme and host the client
//! used; anyone else could lie about them).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri, header};
use ipnet::IpNet;

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
