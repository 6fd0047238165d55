//! TLS for every listener: one certificate, rustls with the ring provider.
//!
//! A `_` domain (or an IP literal) gets a self-signed certificate generated into
//! `data_dir/tls/`; otherwise the operator's certificate and key files are used, and read
//! again when they change (a renewed certificate needs no restart). Client ports speak
//! TLS 1.3 only; the MX port accepts 1.2 too, as other mail servers may need it.

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
        "TLS: `{domain}` needs a certificate: set `tls_cert_file` and `tls_key_file` \
         (or use a domain starting with `_` for a self-signed one)"
    )]
    NoCertificate { domain: String },
}

/// Which handshake a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// IMAP client ports (993, and 143 after STARTTLS): TLS 1.3, ALPN `imap`.
    Imap,
    /// SMTP submission (465, and 587 after STARTTLS): TLS 1.3, ALPN `smtp`.
    Submission,
    /// SMTP from other servers (25 after STARTTLS): TLS 1.2 or 1.3.
    Mx,
    /// HTTPS (443): TLS 1.2 or 1.3, HTTP/2 or HTTP/1.1, or IMAP or submission by ALPN.
    Https,
}

/// The relay's TLS acceptors, sharing one certificate that may be swapped at runtime.
pub struct Tls {
    certificate: Arc<Certificate>,
    imap: TlsAcceptor,
    submission: TlsAcceptor,
    mx: TlsAcceptor,
    https: TlsAcceptor,
    files: Option<CertFiles>,
}

struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

/// The current certificate, swapped whole on reload.
#[derive(Debug)]
struct Certificate(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Load (or, for self-signed domains, generate) the certificate and build the acceptors.
    pub fn load(config: &Config) -> Result<Tls, TlsError> {
        let provider = provider();
        let (key, files) = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                let certified = load_files(cert, key, &provider)?;
                let files = CertFiles { cert: cert.clone(), key: key.clone(), stamp: Mutex::new(stamp(cert, key)) };
                (certified, Some(files))
            }
            (None, None) if config.is_self_signed() => {
                (self_signed(&config.mail_domain, &config.data_dir.join("tls"), &provider)?, None)
            }
            (None, None) => return Err(TlsError::NoCertificate { domain: config.mail_domain.clone() }),
            _ => return Err(TlsError::Certificate("set both `tls_cert_file` and `tls_key_file`, or neither".into())),
        };
        let certificate = Arc::new(Certificate(ArcSwap::from_pointee(key)));
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
            // 443 also carries IMAP and submission for clients behind strict firewalls (ALPN picks).
            https: acceptor(&[&TLS13, &TLS12], &[b"h2", b"http/1.1", b"imap", b"smtp"])?,
            certificate,
            files,
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
        let key = load_files(&files.cert, &files.key, &provider())?;
        self.certificate.0.store(Arc::new(key));
        Ok(true)
    }
}

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
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate(format!("{}: no certificate in the file", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Certificate(format!("{}: {e}", key.display())))?;
    CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| TlsError::Certificate(format!("{} and {}: {e}", cert.display(), key.display())))
}

/// The self-signed certificate of a `_` domain: generated once, kept in `dir`.
fn self_signed(domain: &str, dir: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    if !cert.is_file() || !key.is_file() {
        let generated = rcgen::generate_simple_self_signed(vec![domain.to_string()])
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
