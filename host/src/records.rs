//! The DNS records an operator publishes for the relay's domain (SPEC §9): printed as a zone
//! file fragment by `ferrymail dns`, and with `--check` compared with what DNS answers.

use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
use sha2::Digest;

use crate::config::Config;
use crate::dns::Dns;

/// How long MTA-STS senders may remember the policy: 28 days.
const MTA_STS_MAX_AGE: u64 = 2_419_200;

pub struct Record {
    pub name: String,
    pub kind: RecordType,
    /// In zone file notation; `<...>` for what only the operator knows.
    pub value: String,
    /// An AAAA record is only needed when the server has IPv6.
    pub optional: bool,
}

/// What DNS says about one record.
pub enum Check {
    Published,
    Missing,
    /// DNS has other values (listed).
    Differs(Vec<String>),
    /// The lookup failed.
    Failed(String),
}

/// `/.well-known/mta-sts.txt`: senders must use verified TLS to reach this domain.
pub fn mta_sts_policy(domain: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {domain}\nmax_age: {MTA_STS_MAX_AGE}\n")
}

/// Every record of the relay's domain, with `dkim_record` from `Dkim::dns_record` and the
/// CAA record of `acme::caa_record` if any.
pub fn records(config: &Config, dkim_record: &str, caa: Option<&str>) -> Vec<Record> {
    let domain = &config.mail_domain;
    // Other servers deliver to an address literal's address itself: nothing to look up.
    if config.ip_literal().is_some() {
        return Vec::new();
    }
    let here = format!("{domain}.");
    let record = |name: String, kind, value: String| Record { name, kind, value, optional: false };
    // The policy id only has to change when the policy does.
    let sts_id = hex::encode(&sha2::Sha256::digest(mta_sts_policy(domain))[..6]);
    let srv = |service: &str, port: u16| record(format!("_{service}._tcp.{here}"), RecordType::SRV, format!("0 1 {port} {here}"));
    let mut records = vec![
        record(here.clone(), RecordType::A, "<IPv4 address of this server>".into()),
        Record { optional: true, ..record(here.clone(), RecordType::AAAA, "<IPv6 address of this server>".into()) },
        record(here.clone(), RecordType::MX, format!("10 {here}")),
        record(format!("{}._domainkey.{here}", config.dkim_selector), RecordType::TXT, dkim_record.into()),
        record(here.clone(), RecordType::TXT, "v=spf1 a ~all".into()),
        record(format!("_dmarc.{here}"), RecordType::TXT, "v=DMARC1;p=reject;adkim=s;aspf=s".into()),
        record(format!("_mta-sts.{here}"), RecordType::TXT, format!("v=STSv1; id={sts_id}")),
        record(format!("mta-sts.{here}"), RecordType::CNAME, here.clone()),
        srv("submission", config.listen.submission.port()),
        srv("submissions", config.listen.submissions.port()),
        srv("imap", config.listen.imap.port()),
        srv("imaps", config.listen.imaps.port()),
    ];
    // Only the relay's CA (and account) may issue for the domain (RFC 8657).
    records.extend(caa.map(|caa| record(here.clone(), RecordType::CAA, caa.to_string())));
    records
}

/// The records as a zone file fragment. Long TXT values are split into strings of at most
/// 255 bytes, as DNS requires.
pub fn zone(domain: &str, records: &[Record]) -> String {
    if records.is_empty() {
        return format!(
            "; {domain} is an address literal: there are no DNS records to publish. Other relays deliver\n\
             ; to the address itself, check senders by their connecting address instead of DKIM, and\n\
             ; the certificate is self-signed.\n"
        );
    }
    let width = records.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = format!("; DNS records for {domain}. Fill in the <...> parts; the AAAA record only with IPv6.\n");
    for r in records {
        let value = match r.kind {
            RecordType::TXT => quoted(&r.value),
            _ => r.value.clone(),
        };
        out += &format!("{:width$} 3600 IN {:5} {value}\n", r.name, r.kind.to_string());
    }
    out
}

fn quoted(text: &str) -> String {
    let parts: Vec<String> = text.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    parts.join(" ")
}

impl Record {
    /// Whether a value DNS answered is this record.
    fn matches(&self, answer: &str) -> bool {
        let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
        match self.kind {
            RecordType::A | RecordType::AAAA => true,
            // Any policy id will do.
            RecordType::TXT if self.name.starts_with("_mta-sts.") => squeeze(answer).starts_with("v=stsv1;id="),
            _ => squeeze(answer) == squeeze(&self.value),
        }
    }

    /// Whether this record needs a look-up at all: of a domain's TXT records only SPF ones
    /// are ours to judge.
    fn concerns(&self, answer: &str) -> bool {
        self.kind != RecordType::TXT || !self.value.starts_with("v=spf1") || answer.starts_with("v=spf1")
    }
}

/// Ask DNS for each record (all at once: an unreachable resolver costs one timeout).
pub async fn check(dns: &Dns, records: &[Record]) -> Vec<Check> {
    let lookups: Vec<_> = records
        .iter()
        .map(|record| {
            let (dns, name, kind) = (dns.clone(), record.name.clone(), record.kind);
            tokio::spawn(async move { answers(&dns, &name, kind).await })
        })
        .collect();
    let mut checks = Vec::new();
    for (record, lookup) in records.iter().zip(lookups) {
        let answered = lookup.await.unwrap_or_else(|e| Err(e.to_string()));
        let check = match answered {
            Err(e) => Check::Failed(e),
            Ok(answers) => {
                let answers: Vec<String> = answers.into_iter().filter(|a| record.concerns(a)).collect();
                if answers.is_empty() {
                    Check::Missing
                } else if answers.iter().any(|a| record.matches(a)) {
                    Check::Published
                } else {
                    Check::Differs(answers)
                }
            }
        };
        checks.push(check);
    }
    checks
}

/// The values DNS has for `name`, in zone file notation (TXT strings joined, unquoted).
async fn answers(dns: &Dns, name: &str, kind: RecordType) -> Result<Vec<String>, String> {
    let lookup = match dns.resolver().lookup(name, kind).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let values = lookup.answers().iter().filter_map(|record| match &record.data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        RData::MX(mx) => Some(format!("{} {}", mx.preference, mx.exchange.to_ascii())),
        RData::CNAME(c) => Some(c.0.to_ascii()),
        RData::SRV(srv) => Some(format!("{} {} {} {}", srv.priority, srv.weight, srv.port, srv.target.to_ascii())),
        RData::CAA(caa) => Some(caa.to_string()),
        RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect::<String>()),
        _ => None,
    });
    Ok(values.collect())
}

/// The check as a report, one line per record; `true` when every needed record is published.
pub fn report(records: &[Record], checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    let mut complete = true;
    for (record, check) in records.iter().zip(checks) {
        let what = format!("{} {}", record.kind, record.name);
        let line = match check {
            Check::Published => format!("ok       {what}"),
            Check::Missing if record.optional => format!("absent   {what} (fine without IPv6)"),
            Check::Missing => format!("MISSING  {what}\n         want: {}", record.value),
            Check::Differs(found) => format!("WRONG    {what}\n         want: {}\n         DNS has: {}", record.value, found.join(" | ")),
            Check::Failed(e) => format!("FAILED   {what}: {e}"),
        };
        complete &= matches!(check, Check::Published) || (record.optional && matches!(check, Check::Missing));
        out += &line;
        out.push('\n');
    }
    (out, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_splits_long_txt_values_and_lists_every_record() {
        let config = Config { mail_domain: "chat.example".into(), ..Config::default() };
        let dkim = format!("v=DKIM1;k=rsa;p={}", "A".repeat(392));
        let records = records(&config, &dkim, None);
        let zone = zone("chat.example", &records);
        for needle in [
            "IN MX    10 chat.example.\n",
            "opendkim._domainkey.chat.example.",
            "\"v=spf1 a ~all\"",
            "_dmarc.chat.example.",
            "\"v=DMARC1;p=reject;adkim=s;aspf=s\"",
            "_mta-sts.chat.example.",
            "mta-sts.chat.example.",
            "_submission._tcp.chat.example.",
            "0 1 465 chat.example.",
            "0 1 993 chat.example.",
        ] {
            assert!(zone.contains(needle), "{needle} missing from\n{zone}");
        }
        let dkim_line = zone.lines().find(|l| l.starts_with("opendkim.")).unwrap();
        let strings: Vec<&str> = dkim_line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), dkim);
    }

    #[test]
    fn an_address_literal_has_no_records() {
        let config = Config::parse("mail_domain = \"203.0.113.5\"").unwrap().config;
        let none = records(&config, "v=DKIM1;k=rsa;p=abc", None);
        assert!(none.is_empty());
        assert!(zone(&config.mail_domain, &none).starts_with("; [203.0.113.5] is an address literal"));
        let with_caa = Config { mail_domain: "chat.example".into(), ..Config::default() };
        let caa = "0 issue \"letsencrypt.org; accounturi=https://a/1\"";
        let all = records(&with_caa, "v=DKIM1;k=rsa;p=abc", Some(caa));
        let last = all.last().unwrap();
        assert_eq!((last.kind, last.value.as_str()), (RecordType::CAA, caa));
        assert!(last.matches("0 issue \"letsencrypt.org; accounturi=https://a/1\""));
        let zone = zone("chat.example", &all);
        assert!(zone.lines().any(|l| l.starts_with("chat.example. ") && l.ends_with(&format!("3600 IN CAA   {caa}"))), "{zone}");
    }

    #[test]
    fn matching_ignores_spacing_and_other_txt_records() {
        let config = Config { mail_domain: "chat.example".into(), ..Config::default() };
        let records = records(&config, "v=DKIM1;k=rsa;p=abc", None);
        let find = |name: &str, kind| records.iter().find(|r| r.name == name && r.kind == kind).unwrap();
        let spf = find("chat.example.", RecordType::TXT);
        assert!(spf.matches("v=spf1  a ~all") && !spf.matches("v=spf1 -all"));
        assert!(!spf.concerns("google-site-verification=x"));
        assert!(find("opendkim._domainkey.chat.example.", RecordType::TXT).matches("v=DKIM1; k=rsa; p=abc"));
        assert!(find("_mta-sts.chat.example.", RecordType::TXT).matches("v=STSv1; id=20240101"));
        assert!(find("chat.example.", RecordType::MX).matches("10 chat.example."));
        assert!(!find("chat.example.", RecordType::MX).matches("10 other.example."));
    }
}
