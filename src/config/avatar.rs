//! Where companion avatars may be fetched from (`AVATAR_HOSTS`): [`AvatarHosts`].

/// Image hosts companion avatars may be on (`AVATAR_HOSTS` unset): Clerk's image CDN (and its
/// older name), where Clerk serves the images uploaded through it, and Cloudinary's delivery
/// host, where the GCBB app's image upload puts companion pictures.
pub const DEFAULT_AVATAR_HOSTS: &str = "img.clerk.com,images.clerk.dev,res.cloudinary.com";

/// Where avatars may be fetched from (`AVATAR_HOSTS`): `https:` only, a host exactly as listed
/// (no sub-domains), optionally under a path (`res.cloudinary.com/my-cloud/`: only that
/// account's images). Every viewer's browser fetches an avatar, so anything else would let an
/// owner track viewers or aim their browsers at internal addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarHosts(Vec<AvatarHost>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct AvatarHost {
    host: String,
    /// `/` or a prefix ending in `/`.
    path: String,
}

impl AvatarHosts {
    /// A comma-separated list of `host[/path/]` (an `https://` in front is allowed).
    pub fn parse(raw: &str) -> Result<AvatarHosts, String> {
        let mut hosts = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let with_scheme = if entry.contains("://") {
                entry.to_owned()
            } else {
                format!("https://{entry}")
            };
            let url = url::Url::parse(&with_scheme).map_err(|e| format!("`{entry}`: {e}"))?;
            let host = match url.host() {
                Some(url::Host::Domain(d)) if d.contains('.') => d.to_owned(),
                _ => return Err(format!("`{entry}` must be a domain name (no IP address)")),
            };
            if url.scheme() != "https"
                || url.port().is_some()
                || !url.username().is_empty()
                || url.password().is_some()
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(format!(
                    "`{entry}` must be a host, optionally with a path (https only, no port)"
                ));
            }
            let mut path = url.path().to_owned();
            if !path.ends_with('/') {
                path.push('/');
            }
            hosts.push(AvatarHost { host, path });
        }
        if hosts.is_empty() {
            return Err("lists no host".into());
        }
        Ok(AvatarHosts(hosts))
    }

    /// Whether an avatar at `url` may be stored and shown.
    pub fn allows(&self, url: &url::Url) -> bool {
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.port().is_none()
            && matches!(url.host(), Some(url::Host::Domain(_)))
            && self.0.iter().any(|h| {
                url.host_str() == Some(h.host.as_str()) && url.path().starts_with(h.path.as_str())
            })
    }

    /// The Content-Security-Policy sources of these hosts (`https://img.clerk.com`,
    /// `https://res.cloudinary.com/my-cloud/`).
    pub fn csp_sources(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|h| match h.path.as_str() {
                "/" => format!("https://{}", h.host),
                path => format!("https://{}{path}", h.host),
            })
            .collect()
    }

    /// The entries, for messages: `img.clerk.com, res.cloudinary.com/my-cloud/`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|h| match h.path.as_str() {
                "/" => h.host.clone(),
                path => format!("{}{path}", h.host),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for AvatarHosts {
    fn default() -> Self {
        AvatarHosts::parse(DEFAULT_AVATAR_HOSTS).expect("the default avatar hosts parse")
    }
}
