//! A loopback network of its own for one test: addresses 127.0.N.x, domains `_<name>N.test`,
//! and a DNS server (dnsmasq) that the test's relays are pointed at.

use std::net::{IpAddr, Ipv4Addr, TcpListener};

use super::dns::{TestDns, free_port, mail_domain};
use super::relay::{Options, TestRelay};

pub struct Net {
    n: u8,
    pub dns_port: u16,
    /// Held while the test runs: tests (and test binaries) running at once each get their own N.
    _claim: TcpListener,
}

impl Net {
    pub fn new() -> Net {
        for n in 10..=250 {
            if let Ok(claim) = TcpListener::bind((Ipv4Addr::new(127, 0, n, 1), 9)) {
                return Net { n, dns_port: free_port(), _claim: claim };
            }
        }
        panic!("no free loopback network 127.0.N.0/24");
    }

    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.n, host)
    }

    pub fn domain(&self, name: &str) -> String {
        format!("_{name}{}.test", self.n)
    }

    /// Relay `_<name>N.test` with SMTP and HTTPS on 127.0.N.<host>, ports 25 and 443.
    pub async fn relay(&self, name: &str, host: u8, extra: &str, dir: Option<tempfile::TempDir>) -> TestRelay {
        let extra = format!("dns_resolver = \"127.0.0.1:{}\"\n{extra}", self.dns_port);
        TestRelay::start_with(Options { domain: self.domain(name), ip: Some(self.ip(host)), extra, dir }).await
    }

    /// The records of mail domain `domain` whose server, 127.0.N.<host>, is down.
    pub fn unreachable(&self, domain: &str, host: u8) -> Vec<String> {
        mail_domain(domain, self.ip(host), "opendkim", "v=DKIM1;k=rsa;p=x")
    }

    /// Start the DNS server with the records of `relays` and `extra` ones.
    pub fn records(&self, relays: &[&TestRelay], extra: &[String]) -> TestDns {
        let mut records: Vec<String> = relays
            .iter()
            .flat_map(|r| {
                let IpAddr::V4(ip) = r.smtp.ip() else { panic!("unexpected {}", r.smtp) };
                mail_domain(&r.domain, ip, r.relay.dkim.selector(), r.relay.dkim.dns_record())
            })
            .collect();
        records.extend_from_slice(extra);
        TestDns::start(self.dns_port, &records)
    }
}
