//! The TLS certificate and key for TURN over TLS (and whatever else serves TLS), and their
//! renewal without a restart.
//!
//! The PEM files are read at start: a missing or unreadable file, a file with no
//! certificate, or a key rustls cannot use or that does not belong to the certificate stops
//! the server with a message naming the file.
//!
//! After that, a renewed certificate (Let's Encrypt every 60–90 days) is picked up by new
//! connections. There is no file watcher: a TLS handshake looks at the files' modification
//! times, sizes and inodes, at most once per [`CHECK_INTERVAL`] over all handshakes, and
//! reads the files again only when one changed. A reload that fails — a file caught half-written, a
//! key that does not match, a file gone missing — keeps the certificate in use and logs one
//! warning for that state of the files; the next change is tried again. Established
//! connections keep the keys they were made with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// How often, at most, a handshake looks at the files for a renewal: cheap enough to be
/// unnoticeable (two `stat` calls), and a renewed certificate is used within seconds.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A TLS acceptor for the certificate chain in `cert` and the private key in `key`, which
/// follows renewals of the files (see the module documentation).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let builder = ServerConfig::builder().with_no_client_auth();
    let provider = builder.crypto_provider().clone();
    let resolver = Renewable::load(cert, key, provider, CHECK_INTERVAL)?;
    Ok(TlsAcceptor::from(Arc::new(
        builder.with_cert_resolver(Arc::new(resolver)),
    )))
}

/// What tells a renewed file from the one already loaded: its modification time, size and
/// inode (`None` when the file cannot be looked at, which is a change too). The inode
/// catches a file replaced by a rename within the file system's timestamp granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&metadata),
    })
}

/// The certificate files and the identity loaded from them, reloaded when they change.
#[derive(Debug)]
struct Renewable {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    /// Handshakes run on any runtime thread. The lock is held for a clone of an `Arc`, plus
    /// two `stat` calls every `interval`, plus reading the files once per renewal.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// The files as last seen, loaded or not: a failed state is not tried (or warned about)
    /// twice.
    seen: (Option<Stamp>, Option<Stamp>),
    next_check: Instant,
}

impl Renewable {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        interval: Duration,
    ) -> Result<Self, String> {
        // Looked at before reading: a change during the read is seen at the next check.
        let seen = (stamp(cert), stamp(key));
        let current = Arc::new(identity(cert, key, &provider)?);
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            interval,
            state: Mutex::new(State {
                current,
                seen,
                next_check: Instant::now() + interval,
            }),
        })
    }

    /// Reloads the files if they changed since they were last seen.
    fn check(&self, state: &mut State) {
        let seen = (stamp(&self.cert), stamp(&self.key));
        if seen == state.seen {
            return;
        }
        state.seen = seen;
        match identity(&self.cert, &self.key, &self.provider) {
            Ok(identity) => {
                state.current = Arc::new(identity);
                info!(
                    cert = %self.cert.display(),
                    "TLS certificate reloaded: new connections use it"
                );
            }
            Err(error) => warn!(
                "cannot reload the TLS certificate, new connections keep the previous one \
                 until the files change again: {error}"
            ),
        }
    }
}

impl ResolvesServerCert for Renewable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now >= state.next_check {
            state.next_check = now + self.interval;
            self.check(&mut state);
        }
        Some(state.current.clone())
    }
}

/// Reads the chain and the key and checks that they belong together.
fn identity(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(cert)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid certificate in {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key_pem = read(key)?;
    let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("invalid key in {}: {e}", key.display()))?
        .ok_or_else(|| format!("no private key in {}", key.display()))?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
        format!(
            "{} and {} do not make a TLS identity: {e}",
            cert.display(),
            key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::pki_types::CertificateDer;

    /// A self-signed certificate for `localhost` and its key, as PEM.
    fn generate(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success());
        (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
    }

    fn der(pem: &[u8]) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut &pem[..])
            .next()
            .unwrap()
            .unwrap()
    }

    /// Replaces `path` the way a deploy tool should: a new file renamed over the old one.
    fn replace(path: &Path, contents: &[u8]) {
        let temporary = path.with_extension("new");
        std::fs::write(&temporary, contents).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    }

    /// The certificate a handshake would get now.
    fn served(renewable: &Renewable) -> CertificateDer<'static> {
        let mut state = renewable.state.lock().unwrap();
        renewable.check(&mut state);
        state.current.cert[0].clone()
    }

    #[test]
    fn renewed_files_are_loaded_and_broken_ones_leave_the_identity_alone() {
        let dir = std::env::temp_dir().join(format!("sb-tls-renew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a_cert, a_key) = generate(&dir, "a");
        let (b_cert, b_key) = generate(&dir, "b");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        replace(&cert, &a_cert);
        replace(&key, &a_key);
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let renewable = Renewable::load(&cert, &key, provider.clone(), Duration::ZERO).unwrap();
        assert_eq!(served(&renewable), der(&a_cert));

        // The new certificate before its key: they do not match, A stays.
        replace(&cert, &b_cert);
        assert_eq!(served(&renewable), der(&a_cert));
        replace(&key, &b_key);
        assert_eq!(served(&renewable), der(&b_cert));

        // Half-written, then missing: B stays.
        replace(&cert, &a_cert[..a_cert.len() / 2]);
        assert_eq!(served(&renewable), der(&b_cert));
        std::fs::remove_file(&cert).unwrap();
        assert_eq!(served(&renewable), der(&b_cert));
        replace(&cert, &b_cert);
        assert_eq!(served(&renewable), der(&b_cert));

        // A broken start is refused, naming the problem.
        replace(&key, &a_key);
        let error = Renewable::load(&cert, &key, provider, Duration::ZERO).unwrap_err();
        assert!(error.contains("do not make a TLS identity"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
