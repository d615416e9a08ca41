//! Which client a request comes from, for anonymous rate limits: the address the hop we trust
//! saw, grouped into a fair bucket (an IPv4 address; an IPv6 /64, the block one subscriber gets
//! and can rotate through at will).
//!
//! Which proxy headers are believed is a setting (`TRUSTED_PROXY`, [`TrustedProxy`]), never the
//! client's say: a header is only as good as the hop that wrote it.
//!
//! - **Vercel** (the default when `VERCEL` or `VERCEL_ENV` is set): `x-vercel-forwarded-for`,
//!   then `x-forwarded-for`, as Vercel's edge writes them (it overwrites whatever the client
//!   sent).
//! - **CloudFront** (`TRUSTED_PROXY=cloudfront`, AWS behind CloudFront): `CloudFront-Viewer-Address`
//!   (`ip:port`, IPv6 unbracketed), which CloudFront writes when the origin request policy
//!   forwards it; else the address AWS saw.
//! - **None** (the default elsewhere: Lambda without CloudFront, `gcbb dev`): the address of the
//!   peer the platform adapter recorded ([`PeerAddr`]: the event's `sourceIp`, the socket's
//!   peer), every header ignored.
//! - **Addresses** (a list of IPs and CIDR ranges, what `gcbb dev --trusted-proxy` sets):
//!   `X-Forwarded-For` counts only on a connection from one of them, read from the right, the
//!   first hop that isn't itself a trusted proxy.

use std::fmt;
use std::net::IpAddr;

use axum::http::{Extensions, HeaderMap};

pub use crate::config::TrustedProxy;
use crate::ip::{mask, unmapped};

/// The address of the hop that connected to us, as the platform adapter saw it (a request
/// extension): `gcbb dev`'s socket peer, a Lambda event's `sourceIp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// The bucket a client's anonymous requests are counted in: `v4:<address>`, `v6:<the /64>`,
/// or `unknown` (no address could be told: all such requests share one bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

impl ClientKey {
    /// The bucket of an address: IPv4 per address (an IPv4-mapped IPv6 address too), IPv6 per
    /// /64.
    pub fn of(ip: IpAddr) -> ClientKey {
        match unmapped(ip) {
            IpAddr::V4(v4) => ClientKey(format!("v4:{v4}")),
            v6 @ IpAddr::V6(_) => ClientKey(format!("v6:{}/64", mask(v6, 64))),
        }
    }

    pub fn unknown() -> ClientKey {
        ClientKey("unknown".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's bucket for a request: see the module's documentation.
pub fn client_key(trust: &TrustedProxy, headers: &HeaderMap, extensions: &Extensions) -> ClientKey {
    let peer = extensions.get::<PeerAddr>().map(|p| p.0);
    client_ip(trust, headers, peer)
        .map(ClientKey::of)
        .unwrap_or_else(ClientKey::unknown)
}

/// The client's address under `trust`, `None` when it can't be told.
pub fn client_ip(
    trust: &TrustedProxy,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Option<IpAddr> {
    match trust {
        TrustedProxy::None => peer,
        TrustedProxy::Vercel => first_forwarded(headers, "x-vercel-forwarded-for")
            .or_else(|| first_forwarded(headers, "x-forwarded-for"))
            .or_else(|| first_forwarded(headers, "x-real-ip")),
        TrustedProxy::CloudFront => single_header(headers, "cloudfront-viewer-address")
            .and_then(parse_viewer_address)
            .or(peer),
        TrustedProxy::Addresses(ranges) => {
            let trusted = |ip: IpAddr| ranges.iter().any(|r| r.contains(ip));
            let peer = peer?;
            if !trusted(peer) {
                return Some(peer);
            }
            // Each proxy appends the address it saw: the last entry not written about one of
            // our own proxies is the client. Anything left of it the client may have made up.
            let hops: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect();
            for hop in hops.iter().rev() {
                match parse_ip(hop) {
                    Some(ip) if trusted(ip) => continue,
                    Some(ip) => return Some(ip),
                    // A hop we can't read: what lies left of it can't be trusted either.
                    None => return Some(peer),
                }
            }
            Some(peer)
        }
    }
}

/// The first address of a comma-separated forwarding header (as Vercel writes it: one).
fn first_forwarded(headers: &HeaderMap, name: &str) -> Option<IpAddr> {
    let value = headers.get(name)?.to_str().ok()?;
    parse_ip(value.split(',').next()?)
}

/// A header given exactly once.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// CloudFront's `ip:port` (IPv6 unbracketed: `2001:db8::1:46532`; a bracketed form is read too).
fn parse_viewer_address(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok();
    }
    let (ip, port) = raw.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok()
}

/// An address as proxies write it: trimmed, possibly bracketed, never with a zone or port.
fn parse_ip(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    if raw.is_empty() || raw.len() > 45 {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(trust: &TrustedProxy, h: &[(&str, &str)], peer: Option<&str>) -> String {
        client_ip(trust, &headers(h), peer.map(ip))
            .map(ClientKey::of)
            .unwrap_or_else(ClientKey::unknown)
            .0
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_ipv4_ones_are_per_address() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let other = ClientKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "v6:2001:db8:1:2::/64");
        assert_ne!(a, other);
        assert_eq!(ClientKey::of(ip("203.0.113.9")).as_str(), "v4:203.0.113.9");
        assert_ne!(
            ClientKey::of(ip("203.0.113.9")),
            ClientKey::of(ip("203.0.113.10"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:203.0.113.9")),
            ClientKey::of(ip("203.0.113.9"))
        );
    }

    #[test]
    fn without_a_trusted_proxy_every_forwarding_header_is_ignored() {
        let h = [
            ("x-forwarded-for", "198.51.100.1"),
            ("x-vercel-forwarded-for", "198.51.100.2"),
            ("cloudfront-viewer-address", "198.51.100.3:443"),
            ("x-real-ip", "198.51.100.4"),
        ];
        assert_eq!(
            key(&TrustedProxy::None, &h, Some("192.0.2.7")),
            "v4:192.0.2.7"
        );
        assert_eq!(key(&TrustedProxy::None, &h, None), "unknown");
    }

    #[test]
    fn on_vercel_its_own_headers_name_the_client() {
        let v = TrustedProxy::Vercel;
        assert_eq!(
            key(
                &v,
                &[
                    ("x-vercel-forwarded-for", "2001:db8::5"),
                    ("x-forwarded-for", "198.51.100.1")
                ],
                None
            ),
            "v6:2001:db8::/64"
        );
        assert_eq!(
            key(&v, &[("x-forwarded-for", "203.0.113.9, 10.0.0.1")], None),
            "v4:203.0.113.9"
        );
        assert_eq!(
            key(&v, &[("x-real-ip", "203.0.113.4")], None),
            "v4:203.0.113.4"
        );
        assert_eq!(
            key(
                &v,
                &[("x-forwarded-for", "not an address")],
                Some("192.0.2.1")
            ),
            "unknown"
        );
    }

    #[test]
    fn behind_cloudfront_the_viewer_address_counts_with_its_port_stripped() {
        let cf = TrustedProxy::CloudFront;
        assert_eq!(
            key(
                &cf,
                &[("cloudfront-viewer-address", "198.51.100.10:46532")],
                Some("130.176.0.1")
            ),
            "v4:198.51.100.10"
        );
        assert_eq!(
            key(
                &cf,
                &[(
                    "cloudfront-viewer-address",
                    "2001:0db8:85a3:0000:0000:8a2e:0370:7334:46532"
                )],
                Some("130.176.0.1")
            ),
            "v6:2001:db8:85a3::/64"
        );
        assert_eq!(
            key(
                &cf,
                &[("cloudfront-viewer-address", "[2001:db8::1]:443")],
                None
            ),
            "v6:2001:db8::/64"
        );
        // Missing, twice, or unreadable: the address AWS saw.
        assert_eq!(key(&cf, &[], Some("130.176.0.1")), "v4:130.176.0.1");
        assert_eq!(
            key(
                &cf,
                &[
                    ("cloudfront-viewer-address", "198.51.100.1:1"),
                    ("cloudfront-viewer-address", "198.51.100.2:1")
                ],
                Some("130.176.0.1")
            ),
            "v4:130.176.0.1"
        );
        assert_eq!(
            key(
                &cf,
                &[("cloudfront-viewer-address", "198.51.100.1")],
                Some("130.176.0.1")
            ),
            "v4:130.176.0.1"
        );
        // X-Forwarded-For is nobody's word here.
        assert_eq!(
            key(
                &cf,
                &[("x-forwarded-for", "198.51.100.1")],
                Some("130.176.0.1")
            ),
            "v4:130.176.0.1"
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_a_configured_proxy_and_from_the_right() {
        let trust = TrustedProxy::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        let xff = [("x-forwarded-for", "6.6.6.6, 2001:db8:9:9::1, 10.1.2.3")];
        // From the proxy: the rightmost hop that isn't one of ours.
        assert_eq!(key(&trust, &xff, Some("127.0.0.1")), "v6:2001:db8:9:9::/64");
        // From anyone else: the header is the client's own claim.
        assert_eq!(key(&trust, &xff, Some("192.0.2.50")), "v4:192.0.2.50");
        // Only proxies in the chain: the peer.
        assert_eq!(
            key(
                &trust,
                &[("x-forwarded-for", "10.0.0.9")],
                Some("127.0.0.1")
            ),
            "v4:127.0.0.1"
        );
        // A garbled hop stops the walk.
        assert_eq!(
            key(
                &trust,
                &[("x-forwarded-for", "6.6.6.6, junk")],
                Some("127.0.0.1")
            ),
            "v4:127.0.0.1"
        );
        // Split over two header lines, read as one list.
        assert_eq!(
            key(
                &trust,
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.8")
                ],
                Some("10.9.9.9")
            ),
            "v4:198.51.100.8"
        );
    }

    #[test]
    fn trusted_proxy_settings_parse_or_say_why_not() {
        assert_eq!(TrustedProxy::parse("Vercel").unwrap(), TrustedProxy::Vercel);
        assert_eq!(
            TrustedProxy::parse("cloudfront").unwrap(),
            TrustedProxy::CloudFront
        );
        assert_eq!(TrustedProxy::parse("none").unwrap(), TrustedProxy::None);
        let TrustedProxy::Addresses(r) = TrustedProxy::parse("::1, 192.168.0.0/16").unwrap() else {
            panic!()
        };
        assert!(r[0].contains(ip("::1")) && r[1].contains(ip("192.168.4.5")));
        assert!(!r[1].contains(ip("192.169.0.1")));
        assert!(r[1].contains(ip("::ffff:192.168.1.1")));
        for bad in [
            "cloudflare",
            "10.0.0.0/33",
            "::1/129",
            "1.2.3",
            "10.0.0.0/x",
        ] {
            assert!(TrustedProxy::parse(bad).is_err(), "{bad}");
        }
    }
}
