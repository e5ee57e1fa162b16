//! What an operator of the TURN server relies on: a renewed TLS certificate served without
//! a restart (checked with a real TLS client against real files), a TURN log that tells
//! allocations and failures, and `--print-config` output free of secrets (the real binary).

mod turn_support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsConnector, rustls};
use turn_support::{Link, TurnClient, WAIT, self_signed_cert, turn_server};

// ----- Certificate renewal -----

/// Longer than the server's interval between looks at the certificate files (2 s), so the
/// next handshake looks.
const RENEWAL_NOTICED: Duration = Duration::from_millis(2_300);

/// Trusts whatever certificate the server shows, so the test can see which one it is.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A new TLS connection, with a client of its own so that no session is resumed (a resumed
/// session would not show the certificate again).
async fn connect(addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("a TLS handshake")
    .expect("the handshake succeeds")
}

fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

fn certificate(path: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
}

/// Whether the connection still carries STUN: a Binding request gets its success response.
async fn answers_binding(stream: &mut TlsStream<TcpStream>) -> bool {
    let mut request = [0u8; 20];
    let txid = TransactionId::new([9; 12]);
    let builder = MessageBuilder::new(
        &mut request,
        MessageType::new(Method::BINDING, Class::Request),
        txid,
    )
    .unwrap();
    let len = builder.finish();
    stream.write_all(&request[..len]).await.unwrap();
    let mut response = vec![0u8; 20];
    timeout(WAIT, stream.read_exact(&mut response))
        .await
        .expect("a response")
        .unwrap();
    let body = usize::from(u16::from_be_bytes([response[2], response[3]]));
    response.resize(20 + body, 0);
    stream.read_exact(&mut response[20..]).await.unwrap();
    Message::decode(&response).is_ok_and(|m| {
        m.transaction_id() == txid && m.message_type() == MessageType::BINDING_SUCCESS
    })
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("sb-turn-renewal-{}", std::process::id()));
    let (a_cert, a_key) = self_signed_cert(&dir.join("a"));
    let (b_cert, b_key) = self_signed_cert(&dir.join("b"));
    let (c_cert, c_key) = self_signed_cert(&dir.join("c"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&a_cert, &cert).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let server = turn_server(|config| {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
        config.turn_tls_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.turn_tls_addr().unwrap();

    let mut first = connect(addr).await;
    assert_eq!(served(&first), certificate(&a_cert));

    // Renewed in place, as `cp` or `install` would.
    std::fs::write(&cert, std::fs::read(&b_cert).unwrap()).unwrap();
    std::fs::write(&key, std::fs::read(&b_key).unwrap()).unwrap();
    tokio::time::sleep(RENEWAL_NOTICED).await;
    let second = connect(addr).await;
    assert_eq!(served(&second), certificate(&b_cert));

    // A certificate whose key has not arrived yet is not used: B goes on.
    std::fs::write(&cert, std::fs::read(&c_cert).unwrap()).unwrap();
    tokio::time::sleep(RENEWAL_NOTICED).await;
    let third = connect(addr).await;
    assert_eq!(served(&third), certificate(&b_cert));
    // Its key arrives: C.
    std::fs::write(&key, std::fs::read(&c_key).unwrap()).unwrap();
    tokio::time::sleep(RENEWAL_NOTICED).await;
    let fourth = connect(addr).await;
    assert_eq!(served(&fourth), certificate(&c_cert));

    // The connection made before all this still works.
    assert!(answers_binding(&mut first).await);
    assert_eq!(served(&first), certificate(&a_cert));
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

// ----- The TURN log -----

/// Log output gathered in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The first line containing every one of `parts`, waiting a little for it (the TURN
    /// task writes on its own thread).
    async fn line_with(&self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
            if let Some(line) = text
                .lines()
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with {parts:?} in:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn allocations_and_authentication_failures_are_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The TURN task runs on a thread of its own: only a global subscriber sees it.
    tracing_subscriber::fmt()
        .with_env_filter("switchboard_server::turn_service=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let server = turn_server(|_| {}).await;
    let stun = server.stun_addr().unwrap();

    let mut client = TurnClient::udp(stun).await;
    let relayed = client.allocate().await;
    let local = client.link.local_addr();
    let created = captured.line_with(&["TURN allocation created"]).await;
    assert!(created.contains(" INFO "), "{created}");
    for part in [
        "user=alice".to_owned(),
        format!("client={local}"),
        "transport=udp".to_owned(),
        format!("relayed={relayed}"),
        "lifetime_secs=600".to_owned(),
    ] {
        assert!(created.contains(&part), "{part} not in {created}");
    }
    client.refresh(0).await;
    let ended = captured.line_with(&["TURN allocation ended"]).await;
    for part in ["reason=deleted", "to_peer_bytes=0", "user=alice"] {
        assert!(ended.contains(part), "{part} not in {ended}");
    }

    let mut intruder = TurnClient::new(Link::udp(stun).await, "alice", "guess");
    intruder
        .authed(Method::ALLOCATE, &turn_support::udp_transport)
        .await;
    let failed = captured.line_with(&["TURN authentication failed"]).await;
    assert!(failed.contains("DEBUG"), "{failed}");
    assert!(failed.contains("reason=bad_integrity"), "{failed}");
    assert!(failed.contains("user=\"alice\""), "{failed}");
    assert!(!failed.contains("guess"), "{failed}");
    server.shutdown().await;
}

// ----- Printed configuration -----

#[test]
fn print_config_shows_no_secret() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env_clear()
        .env("SWITCHBOARD_TURN_SECRET", "rest-s3cret")
        .env("SWITCHBOARD_ADMIN_KEY", "admin-s3cret")
        .args([
            "--print-config",
            "--turn-users",
            "alice:pass-s3cret,bob:x:s3cret",
        ])
        .args(["--announce-host", "turn.example.org"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    for line in [
        "turn_secret = \"<redacted>\"",
        "admin_key = \"<redacted>\"",
        "announce_host = \"turn.example.org\"",
        "turn_realm = \"switchboard\"",
        "http_addr = \"127.0.0.1:8080\"",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    assert!(
        text.contains("\"alice:<redacted>\"") && text.contains("\"bob:<redacted>\""),
        "{text}"
    );
}
