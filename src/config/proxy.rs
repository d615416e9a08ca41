//! Whose forwarding headers name the client (`TRUSTED_PROXY`): [`TrustedProxy`].

use super::{ConfigError, Env};

/// Whose forwarding headers are believed (`TRUSTED_PROXY`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustedProxy {
    /// No header: the peer's address.
    #[default]
    None,
    /// Vercel's edge: `x-vercel-forwarded-for`, then `x-forwarded-for`.
    Vercel,
    /// CloudFront: `CloudFront-Viewer-Address`, else the peer's address.
    CloudFront,
    /// `X-Forwarded-For` from peers in these ranges.
    Addresses(Vec<crate::ip::IpRange>),
}

impl TrustedProxy {
    /// `none`, `vercel`, `cloudfront`, or a comma-separated list of IPs and CIDR ranges.
    pub fn parse(raw: &str) -> Result<TrustedProxy, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(TrustedProxy::None),
            "vercel" => Ok(TrustedProxy::Vercel),
            "cloudfront" => Ok(TrustedProxy::CloudFront),
            _ => {
                let ranges = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(crate::ip::IpRange::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!("{e}; expected none, vercel, cloudfront or a list of IPs/CIDRs")
                    })?;
                Ok(TrustedProxy::Addresses(ranges))
            }
        }
    }

    /// How the client's address is found, for banners and logs.
    pub fn describe(&self) -> String {
        match self {
            TrustedProxy::None => "the connection's peer (forwarding headers ignored)".into(),
            TrustedProxy::Vercel => "Vercel's x-vercel-forwarded-for / x-forwarded-for".into(),
            TrustedProxy::CloudFront => "CloudFront-Viewer-Address, else the peer".into(),
            TrustedProxy::Addresses(ranges) => format!(
                "X-Forwarded-For from {}, else the peer",
                ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// `TRUSTED_PROXY`: `vercel`, `cloudfront`, `none`, or IPs/CIDRs whose `X-Forwarded-For` is
/// believed. Unset: Vercel's headers on Vercel (`VERCEL` or `VERCEL_ENV` set), none elsewhere.
pub(super) fn trusted_proxy(env: &Env) -> Result<TrustedProxy, ConfigError> {
    match env.get("TRUSTED_PROXY") {
        Some(raw) => TrustedProxy::parse(&raw).map_err(|reason| ConfigError::Invalid {
            name: "TRUSTED_PROXY",
            reason,
        }),
        None if env.get("VERCEL").is_some() || env.get("VERCEL_ENV").is_some() => {
            Ok(TrustedProxy::Vercel)
        }
        None => Ok(TrustedProxy::None),
    }
}
