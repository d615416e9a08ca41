//! Which hosts `gcbb dev` answers to: loopback names and addresses (`localhost`, `*.localhost`,
//! 127.0.0.0/8, `[::1]`, any port), the address it was told to bind, and what `--allowed-host`
//! adds. A request naming any other host is a page on some other name reaching the local server
//! through DNS rebinding — which could otherwise mint demo users' tokens at `/__dev/session` —
//! and gets 403 (the fix Vite and webpack-dev-server made for the same attack).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, Version};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;

use gcbb::platform::error::ApiError;

/// What a refused request is told: how to allow the name.
const ALLOW_HINT: &str =
    "gcbb dev answers loopback names only; add it with --allowed-host or DEV_ALLOWED_HOSTS";
/// Longest host echoed back in an error (a host name is at most 253 characters).
const MAX_ECHOED_HOST: usize = 255;

/// The hosts a request may name.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// Names allowed exactly (lower case).
    names: Vec<String>,
    /// Names allowed with every subdomain (`--allowed-host .example.test`), without the dot.
    domains: Vec<String>,
    addrs: Vec<IpAddr>,
}

impl AllowedHosts {
    /// The loopback names plus `extra` (`--allowed-host`: a name, `.domain` for it and its
    /// subdomains, or an address) plus `bound`, the address the server listens on when it is
    /// a particular one (a server bound to 192.0.2.7 is reached by that name).
    pub fn new(extra: &[String], bound: IpAddr) -> anyhow::Result<AllowedHosts> {
        let mut allowed = AllowedHosts::default();
        if !bound.is_unspecified() && !bound.is_loopback() {
            allowed.addrs.push(bound);
        }
        for entry in extra.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let entry = entry.to_ascii_lowercase();
            if let Some(domain) = entry.strip_prefix('.') {
                match parse_host(domain) {
                    Some(Host::Name(name)) if !name.is_empty() => allowed.domains.push(name),
                    _ => anyhow::bail!("--allowed-host `.{domain}` is not a domain name"),
                }
                continue;
            }
            let bare = entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or(&entry);
            if let Ok(addr) = bare.parse::<IpAddr>() {
                allowed.addrs.push(addr);
                continue;
            }
            match parse_host(&entry) {
                Some(Host::Name(name)) if !entry.contains(':') => allowed.names.push(name),
                _ => anyhow::bail!(
                    "--allowed-host takes a host name, `.domain` or an IP address (no scheme, \
                     port or path), not `{entry}`"
                ),
            }
        }
        Ok(allowed)
    }

    /// Whether `host` (a `Host` header or `:authority`: a name or address, with or without a
    /// port) is one this server answers to.
    pub fn allows(&self, host: &str) -> bool {
        match parse_host(host) {
            Some(Host::Name(name)) => {
                name == "localhost"
                    || name.ends_with(".localhost")
                    || self.names.contains(&name)
                    || self.domains.iter().any(|d| {
                        name == *d
                            || name
                                .strip_suffix(d.as_str())
                                .is_some_and(|sub| sub.ends_with('.'))
                    })
            }
            Some(Host::Addr(addr)) => addr.is_loopback() || self.addrs.contains(&addr),
            None => false,
        }
    }

    /// For the banner: what is answered besides loopback.
    pub fn describe(&self) -> String {
        let mut extra: Vec<String> = self.names.clone();
        extra.extend(self.domains.iter().map(|d| format!(".{d}")));
        extra.extend(self.addrs.iter().map(|a| match a {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        }));
        if extra.is_empty() {
            "loopback names only (localhost, *.localhost, 127.0.0.0/8, [::1]); \
             --allowed-host adds more"
                .to_owned()
        } else {
            format!("loopback names and {}", extra.join(", "))
        }
    }

    /// `Ok` when `request` names an allowed host: its `:authority` (HTTP/2, or an absolute
    /// request target) and its `Host` header, each when present. A request naming no host at
    /// all is 400 unless it is HTTP/1.0, which had no Host (and no browser sends).
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        let mut named = false;
        if let Some(authority) = request.uri().authority() {
            named = true;
            self.check_one(authority.as_str())?;
        }
        let mut hosts = request.headers().get_all(header::HOST).iter();
        if let Some(value) = hosts.next() {
            named = true;
            if hosts.next().is_some() {
                return Err(ApiError::bad_parameter(
                    "host",
                    "the request has more than one Host header",
                ));
            }
            let value = value
                .to_str()
                .map_err(|_| ApiError::bad_parameter("host", "the Host header is not text"))?;
            self.check_one(value)?;
        }
        if !named && request.version() > Version::HTTP_10 {
            return Err(ApiError::bad_parameter(
                "host",
                "the request names no host (no Host header or :authority)",
            ));
        }
        Ok(())
    }

    fn check_one(&self, host: &str) -> Result<(), ApiError> {
        if self.allows(host) {
            return Ok(());
        }
        let mut shown: String = host.chars().take(MAX_ECHOED_HOST).collect();
        if shown.len() < host.len() {
            shown.push('…');
        }
        tracing::warn!(host = %shown, "request for a host gcbb dev doesn't answer to");
        Err(ApiError::HostNotAllowed {
            host: shown,
            hint: ALLOW_HINT,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Host {
    Name(String),
    Addr(IpAddr),
}

/// A host as a request names it: `name`, `a.b.c.d` or `[v6]`, each with an optional `:port`.
/// `None` for anything else (user info, a bare IPv6 address, a bad port or character): such a
/// host is never allowed.
fn parse_host(raw: &str) -> Option<Host> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        let addr: Ipv6Addr = v6.parse().ok()?;
        if port.is_some_and(|p| !valid_port(p)) {
            return None;
        }
        return Some(Host::Addr(IpAddr::V6(addr)));
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    if port.is_some_and(|p| !valid_port(p)) {
        return None;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Some(Host::Addr(IpAddr::V4(v4)));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then(|| Host::Name(host.to_ascii_lowercase()))
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// `inner` behind the host check.
#[derive(Clone)]
pub struct HostCheck<S> {
    inner: S,
    allowed: Arc<AllowedHosts>,
}

impl<S> HostCheck<S> {
    pub fn new(inner: S, allowed: Arc<AllowedHosts>) -> Self {
        HostCheck { inner, allowed }
    }
}

impl<S> tower::Service<Request> for HostCheck<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, std::future::Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.allowed.check(&request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refused) => Either::Right(std::future::ready(Ok(refused.into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_only() -> AllowedHosts {
        AllowedHosts::new(&[], Ipv4Addr::LOCALHOST.into()).unwrap()
    }

    #[test]
    fn loopback_names_and_addresses_are_answered_with_or_without_a_port() {
        let hosts = loopback_only();
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "app.localhost",
            "a.b.localhost:1",
            "127.0.0.1",
            "127.0.0.1:3000",
            "127.255.0.9:80",
            "[::1]",
            "[::1]:3000",
            "[0:0:0:0:0:0:0:1]:3000",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn rebinding_names_and_odd_spellings_are_refused() {
        let hosts = loopback_only();
        for host in [
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "evillocalhost",
            "127.0.0.1.nip.io",
            "2130706433",
            "0x7f.0.0.1",
            "192.168.1.10:3000",
            "0.0.0.0:3000",
            "::1",
            "[::1",
            "[::ffff:127.0.0.1]",
            "localhost:",
            "localhost:99999999",
            "localhost:3000:1",
            "user@localhost",
            "evil.example#@localhost",
            "",
            "local host",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_add_names_domains_and_addresses() {
        let extra =
            ["my-box.test", " .tunnel.example ", "192.0.2.9", "[fe80::1]"].map(String::from);
        let hosts = AllowedHosts::new(&extra, "0.0.0.0".parse().unwrap()).unwrap();
        for host in [
            "my-box.test:3000",
            "MY-BOX.TEST",
            "tunnel.example",
            "abc.tunnel.example:443",
            "192.0.2.9:3000",
            "[fe80::1]:3000",
            "localhost",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["other.test", "xtunnel.example", "192.0.2.10", "0.0.0.0"] {
            assert!(!hosts.allows(host), "{host}");
        }
        let described = hosts.describe();
        assert!(described.contains("my-box.test, .tunnel.example, 192.0.2.9, [fe80::1]"));
    }

    #[test]
    fn the_address_the_server_is_bound_to_is_answered() {
        let hosts = AllowedHosts::new(&[], "192.0.2.7".parse().unwrap()).unwrap();
        assert!(hosts.allows("192.0.2.7:3000"));
        assert!(!hosts.allows("192.0.2.8:3000"));
    }

    #[test]
    fn an_allowed_host_that_is_a_url_or_has_a_port_is_refused_at_start() {
        for bad in ["http://x.test", "x.test:3000", "x.test/path", ".", ". x"] {
            let err = AllowedHosts::new(&[bad.to_owned()], Ipv4Addr::LOCALHOST.into());
            assert!(err.is_err(), "{bad}");
        }
    }

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request {
        let mut builder = axum::http::Request::get(uri).version(version);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn a_request_must_name_an_allowed_host_in_its_host_header_and_its_authority() {
        let hosts = loopback_only();
        let ok = |r: Request| hosts.check(&r).map_err(|e| (e.status().as_u16(), e.code()));
        assert_eq!(
            ok(request(Version::HTTP_11, "/", &["localhost:3000"])),
            Ok(())
        );
        assert_eq!(
            ok(request(Version::HTTP_11, "/", &["evil.example"])),
            Err((403, "host_not_allowed"))
        );
        // HTTP/2 names the host in :authority, which arrives as the URI's authority.
        assert_eq!(
            ok(request(Version::HTTP_2, "http://localhost:3000/", &[])),
            Ok(())
        );
        assert_eq!(
            ok(request(Version::HTTP_2, "http://evil.example/", &[])),
            Err((403, "host_not_allowed"))
        );
        // Both are checked when both are there.
        assert_eq!(
            ok(request(
                Version::HTTP_11,
                "http://localhost/",
                &["evil.example"]
            )),
            Err((403, "host_not_allowed"))
        );
        assert_eq!(
            ok(request(Version::HTTP_11, "/", &[])),
            Err((400, "invalid_parameter"))
        );
        assert_eq!(
            ok(request(Version::HTTP_2, "/", &[])),
            Err((400, "invalid_parameter"))
        );
        assert_eq!(
            ok(request(
                Version::HTTP_11,
                "/",
                &["localhost", "evil.example"]
            )),
            Err((400, "invalid_parameter"))
        );
        assert_eq!(ok(request(Version::HTTP_10, "/", &[])), Ok(()));
    }
}
