//! Certificates by ACME (RFC 8555) for a relay on a real domain without certificate files.
//!
//! One task per relay: it orders a certificate for the mail domain and `mta-sts.<domain>`
//! (when that name resolves: `ferrymail dns` asks for it), answers the CA's challenge on the
//! relay's own listeners (TLS-ALPN-01 on 443, HTTP-01 on 80; see `tls::Challenges`), writes the
//! result to `data_dir/acme/` and swaps it in (open connections keep the old one). It renews at
//! two thirds of the lifetime, so short-lived certificates work too. A failure keeps the served
//! certificate, is logged, counted and shown by `ferrymail status`, and is retried with a
//! doubling delay; a CA's rate-limit answer waits at least an hour.
//!
//! The protocol itself is instant-acme's; keys are ECDSA P-256.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::tls::Tls;

/// The longest wait between attempts after failures.
const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// After a CA says "rate limited", at least this long (Let's Encrypt counts per hour).
const RATE_LIMITED: Duration = Duration::from_secs(3600);
/// One whole attempt: account, order, validation, certificate.
const ATTEMPT: Duration = Duration::from_secs(600);

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// The ACME side of one relay.
pub struct Acme {
    domain: String,
    directory: String,
    email: String,
    challenges: Vec<ChallengeType>,
    dir: PathBuf,
    first_retry: Duration,
    http: HttpsClient,
    tls: Arc<Tls>,
    dns: Dns,
    metrics: Arc<Metrics>,
    status: Mutex<Status>,
}

#[derive(Default, Clone)]
struct Status {
    /// Unix seconds of the next attempt.
    next_attempt: Option<u64>,
    failures: u32,
    last_error: Option<(u64, String)>,
}

/// `data_dir/acme/account.json`: the account at one CA.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    /// The account URL, for CAA's `accounturi`.
    uri: String,
    /// The CA's names for CAA records, from its directory.
    #[serde(default)]
    caa_identities: Vec<String>,
    credentials: serde_json::Value,
}

impl Acme {
    /// The ACME task of a relay whose certificate comes from ACME; `None` otherwise.
    pub fn new(config: &Config, tls: Arc<Tls>, dns: Dns, metrics: Arc<Metrics>) -> Result<Option<Arc<Acme>>, String> {
        if tls.source() != crate::tls::Source::Acme {
            return Ok(None);
        }
        let challenges = match config.acme_challenge.as_str() {
            "tls-alpn-01" => vec![ChallengeType::TlsAlpn01],
            "http-01" => vec![ChallengeType::Http01],
            _ if config.serve_http => vec![ChallengeType::TlsAlpn01, ChallengeType::Http01],
            _ => vec![ChallengeType::TlsAlpn01],
        };
        Ok(Some(Arc::new(Acme {
            domain: config.mail_domain.to_ascii_lowercase(),
            directory: config.acme_directory.clone(),
            email: config.acme_email.clone(),
            challenges,
            dir: crate::tls::acme_dir(config),
            first_retry: Duration::from_secs(config.acme_retry),
            http: https_client(config.acme_ca_root.as_deref())?,
            tls,
            dns,
            metrics,
            status: Mutex::default(),
        })))
    }

    /// Keep a valid certificate in place, for as long as the relay runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            let wait = self.until_renewal();
            self.set_status(|s| s.next_attempt = Some(unix_now() + wait.as_secs()));
            if !wait.is_zero() {
                // Looked at again at least hourly: the clock may jump.
                tokio::time::sleep(wait.min(Duration::from_secs(3600))).await;
                continue;
            }
            let kind = self.challenges[self.status().failures as usize % self.challenges.len()].clone();
            let attempt = tokio::time::timeout(ATTEMPT, self.obtain(kind.clone())).await;
            match attempt.unwrap_or_else(|_| Err(Failure::other("the attempt took longer than 10 minutes"))) {
                Ok(names) => {
                    self.set_status(|s| *s = Status::default());
                    tracing::info!(names = %names.join(","), "new TLS certificate from ACME in use");
                }
                Err(failure) => {
                    // Doubling from the first retry with each failure in a row.
                    let retry = self.first_retry.saturating_mul(1 << self.status().failures.min(20)).min(MAX_RETRY);
                    let wait = if failure.rate_limited { retry.max(RATE_LIMITED) } else { retry };
                    self.metrics.inc("ferrymail_acme_failures_total", &[("challenge", challenge_name(&kind))]);
                    self.set_status(|s| {
                        s.failures += 1;
                        s.last_error = Some((unix_now(), failure.message.clone()));
                        s.next_attempt = Some(unix_now() + wait.as_secs());
                    });
                    let serving = if self.tls.validity().temporary { "the temporary certificate" } else { "the current certificate" };
                    tracing::error!(
                        "ACME ({}): {}; {serving} keeps serving, next attempt in {} s",
                        challenge_name(&kind),
                        failure.message,
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// How long until the served certificate is due for renewal (zero: now).
    fn until_renewal(&self) -> Duration {
        let validity = self.tls.validity();
        if validity.temporary || !validity.names.iter().any(|n| *n == self.domain) {
            return Duration::ZERO;
        }
        let lifetime = (validity.not_after - validity.not_before).max(0);
        let renew_at = validity.not_before + lifetime * 2 / 3;
        Duration::from_secs((renew_at - unix_now() as i64).max(0) as u64)
    }

    /// One attempt: a certificate for the relay's names, written and in use.
    async fn obtain(&self, kind: ChallengeType) -> Result<Vec<String>, Failure> {
        let names = self.names().await;
        let account = self.account(false).await?;
        let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let order = match account.new_order(&NewOrder::new(&identifiers)).await {
            // The CA forgot the account (a new test CA, a reset): register again, once.
            Err(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
            {
                let account = self.account(true).await?;
                account.new_order(&NewOrder::new(&identifiers)).await
            }
            other => other,
        };
        let mut order = order.map_err(Failure::from)?;
        let result = self.validate_and_fetch(&mut order, kind).await;
        self.tls.challenges().clear();
        let (chain, key) = result?;
        let certified = crate::tls::certified_from_pem(chain.as_bytes(), key.as_bytes()).map_err(Failure::other)?;
        self.write(&chain, &key).map_err(|e| Failure::other(format!("{}: {e}", self.dir.display())))?;
        self.tls.install(certified);
        Ok(names)
    }

    async fn validate_and_fetch(&self, order: &mut instant_acme::Order, kind: ChallengeType) -> Result<(String, String), Failure> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                // Validated recently: CAs reuse authorizations.
                AuthorizationStatus::Valid => continue,
                other => return Err(Failure::other(format!("authorization is {other:?}"))),
            }
            let Some(mut challenge) = authorization.challenge(kind.clone()) else {
                return Err(Failure::other(format!("the CA offers no {} challenge", challenge_name(&kind))));
            };
            let name = challenge.identifier().to_string();
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::TlsAlpn01 => {
                    let certificate = alpn_certificate(&name, key_authorization.digest().as_ref()).map_err(Failure::other)?;
                    self.tls.challenges().set_alpn(&name, Arc::new(certificate));
                }
                _ => self.tls.challenges().set_http(&challenge.token, key_authorization.as_str()),
            }
            challenge.set_ready().await?;
        }
        let retry = RetryPolicy::new().initial_delay(Duration::from_millis(500)).backoff(1.5).timeout(Duration::from_secs(180));
        let status = order.poll_ready(&retry).await?;
        if status != OrderStatus::Ready {
            return Err(Failure::other(format!("validation failed: {}", why_invalid(order).await)));
        }
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&retry).await?;
        Ok((chain, key))
    }

    /// The names to certify: the mail domain, and the MTA-STS host when it resolves.
    async fn names(&self) -> Vec<String> {
        let mut names = vec![self.domain.clone()];
        let mta_sts = format!("mta-sts.{}", self.domain);
        match self.dns.addresses(&mta_sts).await {
            Ok(addresses) if !addresses.is_empty() => names.push(mta_sts),
            _ => tracing::warn!("{mta_sts} does not resolve (see `ferrymail dns`): the certificate leaves it out"),
        }
        names
    }

    /// The account at the configured CA: the stored one, or a new one (`fresh`, or when the
    /// directory changed).
    async fn account(&self, fresh: bool) -> Result<Account, Failure> {
        let path = self.dir.join("account.json");
        if let Some(stored) = stored_account(&self.dir, &self.directory).filter(|_| !fresh) {
            let credentials: AccountCredentials = serde_json::from_value(stored.credentials).map_err(|e| Failure::other(e.to_string()))?;
            return Ok(Account::builder_with_http(Box::new(self.http.clone())).from_credentials(credentials).await?);
        }
        let contact = (!self.email.is_empty()).then(|| format!("mailto:{}", self.email));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) =
            Account::builder_with_http(Box::new(self.http.clone())).create(&new, self.directory.clone(), None).await?;
        let stored = StoredAccount {
            directory: self.directory.clone(),
            uri: account.id().to_string(),
            caa_identities: self.caa_identities().await.unwrap_or_default(),
            credentials: serde_json::to_value(&credentials).map_err(|e| Failure::other(e.to_string()))?,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| Failure::other(e.to_string()))?;
        crate::disk::write_private(&self.dir, "account.json", &json).map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
        tracing::info!(directory = %self.directory, "registered an ACME account");
        Ok(account)
    }

    /// `meta.caaIdentities` of the CA's directory (RFC 8555 §7.1.1).
    async fn caa_identities(&self) -> Option<Vec<String>> {
        use http_body_util::BodyExt;
        let request = hyper::Request::get(self.directory.as_str()).body(BodyWrapper::from(Vec::new())).ok()?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request)).await.ok()?.ok()?;
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024).collect().await.ok()?.to_bytes();
        let directory: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let identities = directory.pointer("/meta/caaIdentities")?.as_array()?;
        Some(identities.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
    }

    fn write(&self, chain: &str, key: &str) -> std::io::Result<()> {
        crate::disk::write_private(&self.dir, "key.pem", key.as_bytes())?;
        crate::disk::write_private(&self.dir, "cert.pem", chain.as_bytes())
    }

    fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Lines for `ferrymail status`.
    pub fn describe(&self) -> String {
        let status = self.status();
        let mut out = String::new();
        if let Some(next) = status.next_attempt {
            out += &format!("acme: next attempt {}\n", time(next));
        }
        if let Some((at, error)) = &status.last_error {
            out += &format!("acme: {} failed attempts, the last at {}: {error}\n", status.failures, time(*at));
        }
        out
    }
}

/// Why an order failed: the CA's word on each challenge.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(problem.to_string());
            }
        }
    }
    if reasons.is_empty() { "the order became invalid".to_string() } else { reasons.join("; ") }
}

/// A failed attempt, and whether the CA asked us to slow down.
struct Failure {
    message: String,
    rate_limited: bool,
}

impl Failure {
    fn other(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), rate_limited: false }
    }
}

impl From<instant_acme::Error> for Failure {
    fn from(e: instant_acme::Error) -> Failure {
        let rate_limited = matches!(&e, instant_acme::Error::Api(p) if p.r#type.as_deref().is_some_and(|t| t.ends_with(":rateLimited")));
        Failure { message: e.to_string(), rate_limited }
    }
}

fn challenge_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        ChallengeType::Http01 => "http-01",
        _ => "other",
    }
}

/// The HTTPS client for the CA: ring, the public roots and the operator's extra one.
fn https_client(extra_root: Option<&Path>) -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_root {
        let failed = |e: String| format!("acme_ca_root {}: {e}", path.display());
        for certificate in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
            roots.add(certificate.map_err(|e| failed(e.to_string()))?).map_err(|e| failed(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().enable_http2().build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// The certificate a TLS-ALPN-01 validation must see (RFC 8737 §3): the one name, and the
/// SHA-256 of the key authorization in a critical acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    if digest.len() != 32 {
        return Err("the key authorization digest is not SHA-256".into());
    }
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let certificate = params.self_signed(&key).map_err(|e| e.to_string())?;
    let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `from_der`: its key check parses the certificate with webpki, which refuses the
    // critical extension no CA would ever see in a served chain.
    let signer = rustls::crypto::ring::default_provider().key_provider.load_private_key(private).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![certificate.der().clone()], signer))
}

/// The CAA record value of `ferrymail dns`: `0 issue "<ca>; accounturi=<account>"` once an
/// account exists, `0 issue "letsencrypt.org"` before one does (the default CA); `None` when
/// certificates do not come from ACME or the CA names no CAA identity.
pub fn caa_record(config: &Config) -> Option<String> {
    if config.is_self_signed() || config.tls_cert_file.is_some() || !config.acme {
        return None;
    }
    match stored_account(&crate::tls::acme_dir(config), &config.acme_directory) {
        Some(account) => {
            let identity = account.caa_identities.first()?;
            Some(format!("0 issue \"{identity}; accounturi={}\"", account.uri))
        }
        None if config.acme_directory.contains(".api.letsencrypt.org/") => Some("0 issue \"letsencrypt.org\"".to_string()),
        None => None,
    }
}

/// The account stored in `dir` if it is one at `directory`.
fn stored_account(dir: &Path, directory: &str) -> Option<StoredAccount> {
    let bytes = std::fs::read(dir.join("account.json")).ok()?;
    serde_json::from_slice::<StoredAccount>(&bytes).ok().filter(|s| s.directory == directory)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn time(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let certified = alpn_certificate("c.example.org", &digest).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&certified.cert[0]).unwrap();
        let extension = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(extension.critical);
        assert_eq!(extension.value, [&[0x04, 0x20][..], &digest].concat(), "an OCTET STRING of the digest");
        let names = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1, "exactly the one name being validated");
        assert!(alpn_certificate("c.example.org", &[0; 20]).is_err());
    }

    #[test]
    fn caa_names_the_account_once_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::parse("mail_domain = \"c.example.org\"").unwrap().config;
        config.data_dir = dir.path().to_path_buf();
        assert_eq!(caa_record(&config).as_deref(), Some("0 issue \"letsencrypt.org\""));
        let stored = StoredAccount {
            directory: config.acme_directory.clone(),
            uri: "https://acme-v02.api.letsencrypt.org/acme/acct/123".into(),
            caa_identities: vec!["letsencrypt.org".into()],
            credentials: serde_json::Value::Null,
        };
        crate::disk::write_private(&crate::tls::acme_dir(&config), "account.json", &serde_json::to_vec(&stored).unwrap()).unwrap();
        assert_eq!(
            caa_record(&config).as_deref(),
            Some("0 issue \"letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123\"")
        );
        config.acme = false;
        assert_eq!(caa_record(&config), None);
        config.acme = true;
        config.mail_domain = "_c.test".into();
        assert_eq!(caa_record(&config), None, "self-signed");
    }
}
