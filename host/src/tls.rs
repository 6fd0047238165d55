//! TLS for every listener: one certificate, rustls with the ring provider.
//!
//! A `_` domain (or an IP literal) gets a self-signed certificate generated into
//! `data_dir/tls/`; the operator's certificate and key files are used, and read again when
//! they change (a renewed certificate needs no restart); otherwise ACME (see `acme.rs`) gets
//! one into `data_dir/acme/`, and until it arrives a temporary self-signed one serves. Client
//! ports speak TLS 1.3 only; the MX port accepts 1.2 too, as other mail servers may need it.
//! The HTTPS port also answers the TLS-ALPN-01 challenges of RFC 8737.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Certificate(String),
    #[error(
        "TLS: `{domain}` needs a certificate: set `tls_cert_file` and `tls_key_file`, or leave \
         `acme` on (or use a domain starting with `_` for a self-signed one)"
    )]
    NoCertificate { domain: String },
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Which handshake a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// IMAP client ports (993, and 143 after STARTTLS): TLS 1.3, ALPN `imap`.
    Imap,
    /// SMTP submission (465, and 587 after STARTTLS): TLS 1.3, ALPN `smtp`.
    Submission,
    /// SMTP from other servers (25 after STARTTLS): TLS 1.2 or 1.3.
    Mx,
    /// HTTPS (443): TLS 1.2 or 1.3, HTTP/2 or HTTP/1.1, or IMAP or submission by ALPN, or a
    /// CA's TLS-ALPN-01 validation.
    Https,
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The operator's files.
    Files,
    /// Generated for a `_` domain or an IP literal.
    SelfSigned,
    /// From a CA by ACME (or, until the first one arrives, a temporary self-signed one).
    Acme,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Files => "files",
            Source::SelfSigned => "self-signed",
            Source::Acme => "acme",
        }
    }
}

/// The relay's TLS acceptors, sharing one certificate that may be swapped at runtime.
pub struct Tls {
    certificate: Arc<Certificate>,
    imap: TlsAcceptor,
    submission: TlsAcceptor,
    mx: TlsAcceptor,
    https: TlsAcceptor,
    files: Option<CertFiles>,
    source: Source,
}

struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

/// What is known of the served certificate.
#[derive(Debug, Clone, Default)]
pub struct Validity {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Its DNS names and IP addresses (subjectAltName).
    pub names: Vec<String>,
    /// The stand-in served until ACME brings the real one.
    pub temporary: bool,
}

/// The current certificate, swapped whole on reload, and the challenge answers of ACME.
struct Certificate {
    current: ArcSwap<CertifiedKey>,
    validity: ArcSwap<Validity>,
    challenges: Challenges,
}

/// Answers to a CA's challenges while an order is pending: TLS-ALPN-01 certificates by
/// name, HTTP-01 key authorizations by token.
#[derive(Default)]
pub struct Challenges {
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    http: Mutex<HashMap<String, String>>,
}

impl Challenges {
    pub fn set_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        self.alpn.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_ascii_lowercase(), key);
    }

    pub fn set_http(&self, token: &str, key_authorization: &str) {
        self.http.lock().unwrap_or_else(|e| e.into_inner()).insert(token.to_string(), key_authorization.to_string());
    }

    /// The key authorization for `/.well-known/acme-challenge/<token>`.
    pub fn http(&self, token: &str) -> Option<String> {
        self.http.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }

    pub fn clear(&self) {
        self.alpn.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.http.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A validating CA offers acme-tls/1 and nothing else (RFC 8737 §3); only then, and
        // only for a name being validated, is the challenge certificate shown.
        let mut alpn = hello.alpn().into_iter().flatten();
        if let (Some(ACME_TLS_ALPN), None) = (alpn.next(), alpn.next()) {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.alpn.lock().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
        }
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Load (or, for self-signed domains, generate) the certificate and build the acceptors.
    pub fn load(config: &Config) -> Result<Tls, TlsError> {
        let provider = provider();
        let (key, files, source) = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                let certified = load_files(cert, key, &provider)?;
                let files = CertFiles { cert: cert.clone(), key: key.clone(), stamp: Mutex::new(stamp(cert, key)) };
                (certified, Some(files), Source::Files)
            }
            (None, None) if config.is_self_signed() => {
                (self_signed(&config.mail_domain, &config.data_dir.join("tls"), &provider)?, None, Source::SelfSigned)
            }
            (None, None) if config.acme => (acme_or_temporary(config, &provider)?, None, Source::Acme),
            (None, None) => return Err(TlsError::NoCertificate { domain: config.mail_domain.clone() }),
            _ => return Err(TlsError::Certificate("set both `tls_cert_file` and `tls_key_file`, or neither".into())),
        };
        let validity = validity_of(&key);
        let certificate = Arc::new(Certificate {
            current: ArcSwap::from_pointee(key),
            validity: ArcSwap::from_pointee(validity),
            challenges: Challenges::default(),
        });
        let acceptor = |versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut server = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| TlsError::Certificate(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(certificate.clone());
            server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(server)))
        };
        Ok(Tls {
            imap: acceptor(&[&TLS13], &[b"imap"])?,
            submission: acceptor(&[&TLS13], &[b"smtp"])?,
            mx: acceptor(&[&TLS13, &TLS12], &[b"smtp"])?,
            // 443 also carries IMAP and submission for clients behind strict firewalls (ALPN
            // picks), and a CA's TLS-ALPN-01 validation.
            https: acceptor(&[&TLS13, &TLS12], &[b"h2", b"http/1.1", b"imap", b"smtp", ACME_TLS_ALPN])?,
            certificate,
            files,
            source,
        })
    }

    pub fn acceptor(&self, port: Port) -> &TlsAcceptor {
        match port {
            Port::Imap => &self.imap,
            Port::Submission => &self.submission,
            Port::Mx => &self.mx,
            Port::Https => &self.https,
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The served certificate's validity and names.
    pub fn validity(&self) -> Arc<Validity> {
        self.certificate.validity.load_full()
    }

    pub fn challenges(&self) -> &Challenges {
        &self.certificate.challenges
    }

    /// Serve a new certificate from now on; connections already open keep theirs.
    pub fn install(&self, key: CertifiedKey) {
        self.certificate.validity.store(Arc::new(validity_of(&key)));
        self.certificate.current.store(Arc::new(key));
    }

    /// Read the certificate files again if they changed. A pair that does not load keeps the
    /// old certificate serving. Returns whether a new certificate is in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.files else { return Ok(false) };
        let now = stamp(&files.cert, &files.key);
        let mut last = files.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now == *last {
            return Ok(false);
        }
        *last = now;
        self.install(load_files(&files.cert, &files.key, &provider())?);
        Ok(true)
    }

    /// `/metrics` lines: when the served certificate expires.
    pub fn render_metrics(&self) -> String {
        let validity = self.validity();
        format!(
            "# HELP ferrymail_tls_certificate_expiry_seconds When the served certificate expires, in Unix time.\n\
             # TYPE ferrymail_tls_certificate_expiry_seconds gauge\n\
             ferrymail_tls_certificate_expiry_seconds{{source=\"{}\",temporary=\"{}\"}} {}\n",
            self.source.name(),
            validity.temporary,
            validity.not_after
        )
    }
}

/// `data_dir/acme/`: the ACME account and the certificate it got.
pub fn acme_dir(config: &Config) -> PathBuf {
    config.data_dir.join("acme")
}

/// The certificate ACME got earlier, or a temporary self-signed one (kept in memory only).
fn acme_or_temporary(config: &Config, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let dir = acme_dir(config);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        match load_files(&cert, &key, provider) {
            Ok(key) => return Ok(key),
            Err(e) => tracing::warn!("{e}; serving a temporary certificate until ACME gets a new one"),
        }
    }
    let failed = |e: String| TlsError::Certificate(format!("cannot generate a certificate for {}: {e}", config.mail_domain));
    let mut params = rcgen::CertificateParams::new(vec![config.mail_domain.clone()]).map_err(|e| failed(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, TEMPORARY_NAME);
    let key = rcgen::KeyPair::generate().map_err(|e| failed(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| failed(e.to_string()))?;
    let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let certified = CertifiedKey::from_der(vec![cert.der().clone()], private, provider).map_err(|e| failed(e.to_string()))?;
    tracing::info!("serving a temporary self-signed certificate for {} until ACME gets one", config.mail_domain);
    Ok(certified)
}

/// What the leaf certificate says about itself; a `ferrymail temporary certificate` is marked.
fn validity_of(key: &CertifiedKey) -> Validity {
    let Some(leaf) = key.cert.first() else { return Validity::default() };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) else { return Validity::default() };
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let ip = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*ip).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    names.extend(ip);
                }
                _ => {}
            }
        }
    }
    let temporary = parsed.subject().iter_common_name().any(|cn| cn.as_str() == Ok(TEMPORARY_NAME));
    Validity {
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        names,
        temporary,
    }
}

const TEMPORARY_NAME: &str = "ferrymail temporary certificate";

/// A TLS client for delivering to another server. With `verify`, the server's certificate
/// must chain to a public root (webpki-roots) and name the host; without (for `_` domains
/// and IP literals), any certificate is taken, though the handshake's signatures are still
/// checked.
///
/// Connectors are made once per kind and shared, so sessions to a host are resumed.
pub fn client(verify: bool, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    type Kind = (bool, Vec<Vec<u8>>);
    static CONNECTORS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<Kind, tokio_rustls::TlsConnector>>> =
        std::sync::LazyLock::new(Default::default);
    let kind = (verify, alpn.iter().map(|p| p.to_vec()).collect());
    let mut connectors = CONNECTORS.lock().unwrap_or_else(|e| e.into_inner());
    connectors.entry(kind).or_insert_with(|| new_client(verify, alpn)).clone()
}

fn new_client(verify: bool, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .expect("ring supports TLS 1.2 and 1.3");
    let mut config = if verify {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The name a server's certificate must carry: its host name, or the address of an IP literal
/// (`[192.0.2.1]`).
pub fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, String> {
    match crate::dns::ip_literal(host).or_else(|| host.parse().ok()) {
        Some(ip) => Ok(rustls_pki_types::ServerName::IpAddress(ip.into())),
        None => rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}")),
    }
}

/// Accepts any certificate, but not a forged handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(cert)?, modified(key)?))
}

fn load_files(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| TlsError::Certificate(format!("{}: {e}", path.display())));
    let (chain, private) = (read(cert)?, read(key)?);
    from_pem(&chain, &private, provider)
        .map_err(|e| TlsError::Certificate(format!("{} and {}: {e}", cert.display(), key.display())))
}

/// A certificate chain and its key in PEM (as files hold them and ACME hands them over), the
/// key checked against the leaf.
pub fn certified_from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    from_pem(chain, key, &provider())
}

fn from_pem(chain: &[u8], key: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain).collect::<Result<Vec<_>, _>>().map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the file".into());
    }
    let private = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| e.to_string())
}

/// The self-signed certificate of a `_` domain: generated once, kept in `dir`.
fn self_signed(domain: &str, dir: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    if !cert.is_file() || !key.is_file() {
        // An address literal's certificate names the address itself (an IP SAN).
        let name = crate::dns::ip_literal(domain).map_or(domain.to_string(), |ip| ip.to_string());
        let generated = rcgen::generate_simple_self_signed(vec![name])
            .map_err(|e| TlsError::Certificate(format!("cannot generate a certificate for {domain}: {e}")))?;
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(dir)?;
            std::fs::write(&cert, generated.cert.pem())?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true).mode(0o600);
            std::io::Write::write_all(&mut options.open(&key)?, generated.signing_key.serialize_pem().as_bytes())
        };
        write().map_err(|e| TlsError::Certificate(format!("{}: {e}", dir.display())))?;
        tracing::info!("generated a self-signed certificate for {domain} in {}", dir.display());
    }
    load_files(&cert, &key, provider)
}
