//! Logins, for IMAP and SMTP alike: an existing account checks its password; an unknown
//! address is created on first login if the accounts policy agrees (SPEC §1).
//!
//! Passwords are hashed with Argon2id. Hashes imported from a chatmail relay's Dovecot
//! (`{SHA512-CRYPT}$6$...`) verify too. A successful login is remembered as a keyed digest
//! (never the password) so that the app's frequent reconnects do not each cost a KDF run.
//! Wrong passwords slow down further checks for that account (login_throttle.rs); logins the
//! digest already vouches for are never slowed, so guessing does not lock out the account's app.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::login_throttle::{LoginThrottle, Turn};
use crate::policy::{AccountRequest, Policies, Verdict};
use crate::store::{Account, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong password, or an address that may not be created: the client sees one answer.
    #[error("invalid credentials")]
    Invalid,
    /// The accounts policy refused to create the account.
    #[error("account creation refused: {0}")]
    Refused(String),
    /// Try again later (store trouble, creation deferred for lack of resources).
    #[error("temporary failure: {0}")]
    Temporary(String),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        LoginError::Temporary(e.to_string())
    }
}

/// Remembered successful logins: address -> digest of (secret, address, password).
const VERIFIED_CACHE_LIMIT: usize = 200_000;
/// Password hashing is memory- and CPU-hungry: a few at a time.
const CONCURRENT_HASHES: usize = 4;

#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    policies: Policies,
    clock: Clock,
    data_dir: std::path::PathBuf,
    secret: [u8; 32],
    verified: Mutex<HashMap<String, [u8; 32]>>,
    throttle: Mutex<LoginThrottle>,
    /// Off only for the fuzzers' relay (fuzz.rs), whose inputs guess passwords by the thousand.
    throttled: std::sync::atomic::AtomicBool,
    hashing: tokio::sync::Semaphore,
    thresholds: crate::resources::Thresholds,
}

impl Authenticator {
    pub fn new(store: Store, policies: Policies, clock: Clock, config: &crate::config::Config) -> Authenticator {
        let mut secret = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
        Authenticator {
            inner: Arc::new(Inner {
                store,
                policies,
                clock,
                data_dir: config.data_dir.clone(),
                secret,
                verified: Mutex::new(HashMap::new()),
                throttle: Mutex::default(),
                throttled: std::sync::atomic::AtomicBool::new(true),
                hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
                thresholds: crate::resources::Thresholds::new(config),
            }),
        }
    }

    /// Log in, creating the account on first login when the policies allow it.
    pub async fn login(&self, address: &str, password: &str) -> Result<Account, LoginError> {
        let address = address.trim().to_ascii_lowercase();
        if address.is_empty() || password.is_empty() || address.len() > 320 || password.len() > 1024 {
            return Err(LoginError::Invalid);
        }
        let lookup = address.clone();
        let existing = self.inner.store.run(move |s| s.account(&lookup)).await?;
        let account = match existing {
            Some(account) => {
                self.check_password(&account, password).await?;
                account
            }
            None => self.create(&address, password).await?,
        };
        let today = self.inner.clock.today();
        if account.last_login_day != today {
            let address = account.address.clone();
            // A login that cannot be recorded (a full disk) still lets the user in: to delete
            // mail, for one. It is recorded at the next login.
            if let Err(e) = self.inner.store.run(move |s| s.touch_login(&address, today)).await {
                tracing::warn!("cannot record a login day: {e}");
            }
        }
        Ok(account)
    }

    /// Create an account with credentials handed out by `/new`. `Ok(false)`: the address is
    /// taken, and its account stays as it is.
    pub async fn register(&self, address: &str, password: &str) -> Result<bool, LoginError> {
        Ok(self.insert(address, password).await?.1)
    }

    async fn create(&self, address: &str, password: &str) -> Result<Account, LoginError> {
        let resources = crate::resources::current(&self.inner.data_dir);
        let request = AccountRequest {
            address: address.to_string(),
            password_length: password.chars().count() as u32,
            resources: resources.clone(),
        };
        match self.inner.policies.create_account(request).await {
            Verdict::Accept => {}
            Verdict::Reject(reply) => {
                self.report_refusal(&resources, &reply);
                return Err(LoginError::Refused(reply.to_string()));
            }
            Verdict::Defer(reply) => {
                self.report_refusal(&resources, &reply);
                return Err(LoginError::Temporary(reply.to_string()));
            }
        }
        let (account, created) = self.insert(address, password).await?;
        if created {
            self.metrics().inc("ferrymail_accounts_created_total", &[("via", "login")]);
            tracing::debug!(address, "account created on first login");
            return Ok(account);
        }
        // Another login created it first: it is an existing account now.
        self.check_password(&account, password).await?;
        Ok(account)
    }

    /// Store a new account unless the address is taken (then the existing one and `false`).
    async fn insert(&self, address: &str, password: &str) -> Result<(Account, bool), LoginError> {
        let hash = self.hash(password).await?;
        let today = self.inner.clock.today();
        let owned = address.to_ascii_lowercase();
        let (account, created) = self.inner.store.run(move |s| s.create_account(&owned, &hash, today)).await?;
        if created {
            self.remember(&account.address, password);
        }
        Ok((account, created))
    }

    async fn check_password(&self, account: &Account, password: &str) -> Result<(), LoginError> {
        let digest = self.digest(&account.address, password);
        if self.inner.verified.lock().unwrap_or_else(|e| e.into_inner()).get(&account.address) == Some(&digest) {
            return Ok(());
        }
        let address = account.address.as_str();
        let turn = match self.inner.throttled.load(std::sync::atomic::Ordering::Relaxed) {
            true => self.throttle().turn(address, Instant::now()),
            false => Turn::Now,
        };
        match turn {
            Turn::Now => {}
            Turn::After(wait) => {
                self.metrics().inc("ferrymail_login_checks_delayed_total", &[]);
                tokio::time::sleep(wait).await;
            }
            Turn::TryLater => {
                self.metrics().inc("ferrymail_login_checks_refused_total", &[]);
                return Err(LoginError::Temporary("too many wrong passwords for this account".into()));
            }
        }
        let _slot = self.inner.hashing.acquire().await.ok();
        let (hash, given) = (account.password_hash.clone(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || verify(&hash, &given))
            .await
            .map_err(|e| LoginError::Temporary(e.to_string()))?;
        if !ok {
            self.throttle().failed(address, Instant::now());
            self.metrics().inc("ferrymail_login_failures_total", &[]);
            return Err(LoginError::Invalid);
        }
        self.throttle().succeeded(address);
        self.remember(address, password);
        Ok(())
    }

    /// Whether wrong passwords slow down further checks (always, but for the fuzzers).
    pub(crate) fn set_throttled(&self, on: bool) {
        self.inner.throttled.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.inner.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Log and count a refused account (see [`crate::resources::Thresholds::report_refusal`]).
    pub fn report_refusal(&self, resources: &crate::policy::Resources, reply: &crate::policy::Reply) {
        self.inner.thresholds.report_refusal(self.metrics(), "login", resources, reply);
    }

    /// The same for `/new`.
    pub fn report_new_refusal(&self, resources: &crate::policy::Resources, reply: &crate::policy::Reply) {
        self.inner.thresholds.report_refusal(self.metrics(), "new", resources, reply);
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.policies.services().metrics
    }

    /// An Argon2id hash of `password`, in PHC format.
    pub async fn hash(&self, password: &str) -> Result<String, LoginError> {
        let _slot = self.inner.hashing.acquire().await.ok();
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| LoginError::Temporary(e.to_string()))?
            .map_err(LoginError::Temporary)
    }

    fn digest(&self, address: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.inner.secret);
        h.update(address.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn remember(&self, address: &str, password: &str) {
        let digest = self.digest(address, password);
        let mut verified = self.inner.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE_LIMIT {
            verified.clear();
        }
        verified.insert(address.to_string(), digest);
    }
}

/// Hash a password with Argon2id (19 MiB, 2 passes: OWASP's minimum).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| e.to_string())?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| argon2_into(&argon, password.as_bytes(), raw_salt, out))
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: argon.params().try_into().map_err(|e: argon2::password_hash::Error| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Check a password against a stored hash: Argon2 (PHC) or SHA512-crypt from Dovecot.
pub fn verify(hash: &str, password: &str) -> bool {
    let crypt = hash.strip_prefix("{SHA512-CRYPT}").or_else(|| hash.strip_prefix("{CRYPT}")).unwrap_or(hash);
    if crypt.starts_with("$6$") {
        return sha_crypt::sha512_check(password, crypt).is_ok();
    }
    PasswordHash::new(hash).ok().and_then(|parsed| verify_argon2(&parsed, password.as_bytes())).unwrap_or(false)
}

fn verify_argon2(parsed: &PasswordHash<'_>, password: &[u8]) -> Option<bool> {
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
    let params = Params::try_from(parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt_bytes = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt_bytes).ok()?;
    let argon = Argon2::new(algorithm, version, params);
    let output = Output::init_with(expected.len(), |out| argon2_into(&argon, password, salt, out)).ok()?;
    // Output compares in constant time.
    Some(output == expected)
}

/// Argon2's working memory (19 MiB per hash), kept for the next hash. Allocated afresh for
/// each one, it stayed with the allocator's per-thread arenas: after a restart, a thousand apps
/// logging in again grew the relay by over ten gigabytes (found by bench/, figure b).
static WORKING_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

fn argon2_into(argon: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::password_hash::Result<()> {
    let blocks = argon.params().block_count();
    let pooled = WORKING_MEMORY.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut memory = pooled.filter(|m| m.len() == blocks).unwrap_or_else(|| vec![Block::default(); blocks]);
    let result = argon.hash_password_into_with_memory(password, salt, out, &mut memory[..]);
    let mut pool = WORKING_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < CONCURRENT_HASHES {
        pool.push(memory);
    }
    result.map_err(|_| argon2::password_hash::Error::Crypto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify(&hash, "correct horse"));
        assert!(!verify(&hash, "correct horsE"));
        assert!(!verify("garbage", "x"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Stored hashes made by the crate's own hasher still verify, and ours verify there.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(verify(&theirs, "correct horse"));
        assert!(!verify(&theirs, "correct horsE"));
        let ours = hash_password("correct horse").unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap()).is_ok());
        // Other parameters (an older or tuned relay) need their own working memory.
        let params = Params::new(8192, 1, 1, None).unwrap();
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"pw-123456", &salt).unwrap().to_string();
        assert!(verify(&small, "pw-123456"));
        assert!(!verify(&small, "pw-123457"));
    }

    #[test]
    fn dovecot_sha512_crypt_hashes_verify() {
        // `doveadm pw -s SHA512-CRYPT -p secret123` style, made with the same algorithm.
        let hash = sha_crypt::sha512_simple("secret123", &sha_crypt::Sha512Params::new(5000).unwrap()).unwrap();
        assert!(verify(&format!("{{SHA512-CRYPT}}{hash}"), "secret123"));
        assert!(verify(&hash, "secret123"));
        assert!(!verify(&hash, "secret124"));
    }
}
