//! DNS for delivery to other servers: where a domain's mail goes (MX, with the implicit MX of
//! RFC 5321 and the null MX of RFC 7505) and the addresses of those hosts. The resolver is the
//! system's, or the one `dns_resolver` names (tests run their own DNS server).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::net::NetError;
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::proto::rr::RData;

/// Why a domain's mail hosts could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The domain accepts no mail (`MX 0 .`): permanent.
    #[error("the domain accepts no mail (null MX)")]
    NullMx,
    /// The domain does not exist: permanent.
    #[error("the domain does not exist")]
    NoSuchDomain,
    /// Anything else (timeouts, SERVFAIL): try again later.
    #[error("DNS lookup failed: {0}")]
    Temporary(String),
}

#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// The system resolver, or the server at `server` (an IP and port) when given.
    pub fn new(server: Option<SocketAddr>) -> Result<Dns, String> {
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(5);
        options.attempts = 2;
        let builder = match server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(server.ip(), true, vec![udp, tcp])]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let resolver = builder.with_options(options).build().map_err(|e| format!("cannot start the DNS resolver: {e}"))?;
        Ok(Dns { resolver })
    }

    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }

    /// The hosts that take `domain`'s mail, most preferred first. A domain literal
    /// (`[192.0.2.1]`) is its own host; a domain without MX records is its own host too.
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<String>, LookupError> {
        if ip_literal(domain).is_some() {
            return Ok(vec![domain.to_string()]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if mx.iter().any(|(_, host)| host == "." || host.is_empty()) {
                    return Err(LookupError::NullMx);
                }
                if mx.is_empty() {
                    return Ok(vec![domain.to_string()]);
                }
                mx.sort();
                Ok(mx.into_iter().map(|(_, host)| host.trim_end_matches('.').to_string()).collect())
            }
            Err(e) if e.is_nx_domain() => Err(LookupError::NoSuchDomain),
            // No MX records (NODATA): the implicit MX, the domain itself.
            Err(e) if e.is_no_records_found() => Ok(vec![domain.to_string()]),
            Err(e) => Err(temporary(e)),
        }
    }

    /// A host's addresses (IPv4 first).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        if let Some(ip) = ip_literal(host).or_else(|| host.parse().ok()) {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) if e.is_nx_domain() => Err(LookupError::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Err(LookupError::Temporary(format!("{host} has no address"))),
            Err(e) => Err(temporary(e)),
        }
    }
}

fn temporary(e: NetError) -> LookupError {
    LookupError::Temporary(e.to_string())
}

/// The address of a domain literal such as `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
pub fn ip_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")).unwrap_or(inner);
    inner.parse().ok()
}

/// Whether TLS to this domain's servers may use any certificate: `_` domains and IP
/// literals have no certificate a public CA would issue.
pub fn accepts_invalid_certificates(domain: &str) -> bool {
    domain.starts_with('_') || ip_literal(domain).is_some() || domain.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(ip_literal("[192.0.2.1]"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(ip_literal("[IPv6:2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip_literal("example.org"), None);
        assert!(accepts_invalid_certificates("_relay.test"));
        assert!(accepts_invalid_certificates("[127.0.0.1]"));
        assert!(!accepts_invalid_certificates("relay.example.org"));
    }
}
