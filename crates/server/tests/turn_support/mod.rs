//! Shared helpers for the TURN integration tests: a running server with TURN on ephemeral
//! loopback ports, a TURN client built on our own codec (UDP or TCP), coturn's tools as
//! child processes, and a small HTTP GET that can send headers.
//!
//! Tests that relay to loopback peers opt in with `turn_allow_peers = ["127.0.0.0/8"]`;
//! everything else runs with the production defaults.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use switchboard_server::{Config, Server, start};
use switchboard_stun::{
    Attribute, AttributeType, Class, ErrorCode, Message, MessageBuilder, MessageType, Method,
    TransactionId, long_term_key_md5,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(5);
/// How long to wait before concluding that nothing is coming.
pub const SILENCE: Duration = Duration::from_millis(300);
pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";
pub const SECRET: &str = "test-rest-secret";

/// A server with TURN, a static user and a known REST secret; `configure` adjusts it.
pub async fn turn_server(configure: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::for_tests();
    config.turn_users = vec![format!("{USER}:{PASSWORD}")];
    config.turn_secret = SECRET.into();
    configure(&mut config);
    start(config).await.expect("server starts")
}

/// Opts a test into relaying to loopback peers.
pub fn allow_loopback(config: &mut Config) {
    config.turn_allow_peers = vec!["127.0.0.0/8".into()];
}

/// A UDP port that was free a moment ago, for child processes that need a fixed port.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ----- HTTP -----

/// GET `path` with extra header lines; returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an HTTP response")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().expect("a status code");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    // Chunked bodies: the JSON and text bodies here arrive as a single chunk.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let (_, rest) = body.split_once("\r\n").unwrap_or(("", body));
        rest.rsplit_once("\r\n0\r\n")
            .map_or(rest, |(chunk, _)| chunk)
            .to_owned()
    } else {
        body.to_owned()
    };
    (status, body)
}

pub async fn metrics(server: &Server) -> String {
    let (status, body) = http_get(server.http_addr(), "/metrics", &[]).await;
    assert_eq!(status, 200);
    body
}

/// The value of one metric line (`name{labels}` exactly), failing if it is missing.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

// ----- A TURN client on our own codec -----

/// How the client reaches the server.
pub enum Link {
    Udp {
        socket: UdpSocket,
        server: SocketAddr,
    },
    Tcp {
        stream: TcpStream,
        buf: Vec<u8>,
    },
}

impl Link {
    pub async fn udp(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Link::Udp { socket, server }
    }

    pub async fn tcp(server: SocketAddr) -> Self {
        let stream = TcpStream::connect(server).await.unwrap();
        Link::Tcp {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Link::Udp { socket, .. } => socket.local_addr().unwrap(),
            Link::Tcp { stream, .. } => stream.local_addr().unwrap(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            Link::Udp { socket, server } => {
                socket.send_to(bytes, *server).await.unwrap();
            }
            Link::Tcp { stream, .. } => stream.write_all(bytes).await.unwrap(),
        }
    }

    /// The next datagram or frame within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self {
            Link::Udp { socket, .. } => {
                let mut buf = vec![0u8; 65_536];
                let (len, _) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
                buf.truncate(len);
                Some(buf)
            }
            Link::Tcp { stream, buf } => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    if let Ok(Some(len)) = switchboard_turn::frame_len(buf, 70_000)
                        && len <= buf.len()
                    {
                        return Some(buf.drain(..len).collect());
                    }
                    let mut chunk = [0u8; 4096];
                    let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    pub async fn recv(&mut self) -> Vec<u8> {
        self.recv_within(WAIT)
            .await
            .expect("a message from the server")
    }

    /// True once the server has closed a TCP link.
    pub async fn closed_by_server(&mut self) -> bool {
        let Link::Tcp { stream, .. } = self else {
            panic!("UDP has no connection to close")
        };
        let mut byte = [0u8; 1];
        matches!(
            timeout(WAIT, stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// A decoded response, owned.
pub struct Response {
    pub bytes: Vec<u8>,
}

impl Response {
    pub fn message(&self) -> Message<'_> {
        Message::decode(&self.bytes).expect("a STUN response")
    }

    pub fn class(&self) -> Class {
        self.message().message_type().class
    }

    pub fn error(&self) -> Option<ErrorCode> {
        self.message().error_code().map(|(code, _)| code)
    }

    pub fn text(&self, kind: AttributeType) -> Option<String> {
        match self.message().get(kind)? {
            Attribute::Realm(text) | Attribute::Nonce(text) => Some(text.to_owned()),
            _ => None,
        }
    }

    pub fn raw(&self, kind: AttributeType) -> Option<Vec<u8>> {
        self.message().attributes().find_map(|a| match a {
            Attribute::Other(raw) if raw.kind == kind => Some(raw.value.to_vec()),
            _ => None,
        })
    }

    pub fn xor_address(&self, kind: AttributeType) -> Option<SocketAddr> {
        let value = self.raw(kind)?;
        decode_xor(&value, &self.message().transaction_id())
    }

    pub fn lifetime(&self) -> Option<u32> {
        self.raw(AttributeType::LIFETIME)
            .map(|v| u32::from_be_bytes(v.try_into().unwrap()))
    }
}

/// XOR-*-ADDRESS values, IPv4 only (all the tests use).
pub fn decode_xor(value: &[u8], _txid: &TransactionId) -> Option<SocketAddr> {
    let [_, 0x01, p0, p1, a, b, c, d] = value else {
        return None;
    };
    let port = u16::from_be_bytes([*p0, *p1]) ^ 0x2112;
    let ip = u32::from_be_bytes([*a, *b, *c, *d]) ^ 0x2112_A442;
    Some(SocketAddr::from((ip.to_be_bytes(), port)))
}

/// A TURN client speaking through a [`Link`], with long-term credentials.
pub struct TurnClient {
    pub link: Link,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: String,
    next_txid: u32,
}

type Fill<'f> = &'f dyn Fn(&mut MessageBuilder<'_>);

pub fn nothing(_: &mut MessageBuilder<'_>) {}

pub fn udp_transport(b: &mut MessageBuilder<'_>) {
    b.add_raw(AttributeType::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .unwrap();
}

impl TurnClient {
    pub fn new(link: Link, username: &str, password: &str) -> Self {
        Self {
            link,
            username: username.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
            next_txid: rand_start(),
        }
    }

    pub async fn udp(server: SocketAddr) -> Self {
        Self::new(Link::udp(server).await, USER, PASSWORD)
    }

    pub async fn tcp(server: SocketAddr) -> Self {
        Self::new(Link::tcp(server).await, USER, PASSWORD)
    }

    pub fn txid(&mut self) -> TransactionId {
        self.next_txid = self.next_txid.wrapping_add(1);
        let mut id = [0x5B; 12];
        id[8..].copy_from_slice(&self.next_txid.to_be_bytes());
        TransactionId::new(id)
    }

    /// Encodes a message; signed when `signed` (with the realm and nonce learned so far).
    pub fn encode(
        &self,
        method: Method,
        class: Class,
        txid: TransactionId,
        signed: bool,
        fill: Fill<'_>,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let mut builder =
            MessageBuilder::new(&mut buf, MessageType::new(method, class), txid).unwrap();
        fill(&mut builder);
        if signed {
            builder.add_username(&self.username).unwrap();
            builder.add_realm(&self.realm).unwrap();
            builder.add_nonce(&self.nonce).unwrap();
            let key = long_term_key_md5(&self.username, &self.realm, &self.password);
            builder.add_message_integrity(&key).unwrap();
        }
        let len = builder.finish_with_fingerprint().unwrap();
        buf.truncate(len);
        buf
    }

    /// Sends a request and waits for the response with its transaction id (skipping
    /// anything else, such as relayed data).
    pub async fn request(&mut self, method: Method, signed: bool, fill: Fill<'_>) -> Response {
        let txid = self.txid();
        let bytes = self.encode(method, Class::Request, txid, signed, fill);
        self.link.send(&bytes).await;
        self.response_to(txid).await
    }

    pub async fn response_to(&mut self, txid: TransactionId) -> Response {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let bytes = self.link.recv_within(left).await.expect("a response");
            if Message::decode(&bytes).is_ok_and(|m| m.transaction_id() == txid) {
                return Response { bytes };
            }
        }
    }

    /// Learns realm and nonce from a 401 or 438.
    pub fn learn(&mut self, response: &Response) {
        if let Some(realm) = response.text(AttributeType::REALM) {
            self.realm = realm;
        }
        if let Some(nonce) = response.text(AttributeType::NONCE) {
            self.nonce = nonce;
        }
    }

    /// A signed request, retried once after a 401 challenge or 438 as real clients do.
    pub async fn authed(&mut self, method: Method, fill: Fill<'_>) -> Response {
        if !self.nonce.is_empty() {
            let response = self.request(method, true, fill).await;
            if response.error() != Some(ErrorCode::STALE_NONCE) {
                return response;
            }
            self.learn(&response);
        } else {
            let challenge = self.request(method, false, fill).await;
            assert_eq!(challenge.error(), Some(ErrorCode::UNAUTHORIZED));
            self.learn(&challenge);
        }
        self.request(method, true, fill).await
    }

    /// Allocates a UDP relay; returns the relayed address.
    pub async fn allocate(&mut self) -> SocketAddr {
        let response = self.authed(Method::ALLOCATE, &udp_transport).await;
        assert_eq!(
            response.class(),
            Class::SuccessResponse,
            "allocate failed: {:?}",
            response.error()
        );
        response
            .xor_address(AttributeType::XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS")
    }

    pub async fn create_permission(&mut self, peer: SocketAddr) -> Response {
        self.authed(Method::CREATE_PERMISSION, &move |b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                .unwrap()
        })
        .await
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Response {
        self.authed(Method::CHANNEL_BIND, &move |b| {
            b.add_raw(
                AttributeType::CHANNEL_NUMBER,
                &[(channel >> 8) as u8, channel as u8, 0, 0],
            )
            .unwrap();
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                .unwrap();
        })
        .await
    }

    pub async fn refresh(&mut self, lifetime: u32) -> Response {
        self.authed(Method::REFRESH, &move |b| {
            b.add_raw(AttributeType::LIFETIME, &lifetime.to_be_bytes())
                .unwrap()
        })
        .await
    }

    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let txid = self.txid();
        let bytes = self.encode(Method::SEND, Class::Indication, txid, false, &|b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                .unwrap();
            b.add_raw(AttributeType::DATA, data).unwrap();
        });
        self.link.send(&bytes).await;
    }

    /// Sends ChannelData, padded on TCP.
    pub async fn channel_data(&mut self, channel: u16, data: &[u8]) {
        let mut frame = Vec::new();
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
        frame.extend_from_slice(data);
        if matches!(self.link, Link::Tcp { .. }) {
            while frame.len() % 4 != 0 {
                frame.push(0);
            }
        }
        self.link.send(&frame).await;
    }

    /// The next relayed data: (peer, data) from a Data indication, or (channel, data)
    /// from ChannelData.
    pub async fn relayed(&mut self) -> Relayed {
        self.relayed_within(WAIT).await.expect("relayed data")
    }

    pub async fn relayed_within(&mut self, wait: Duration) -> Option<Relayed> {
        let bytes = self.link.recv_within(wait).await?;
        if bytes[0] & 0xC0 == 0x40 {
            let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
            let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            return Some(Relayed::Channel(channel, bytes[4..4 + len].to_vec()));
        }
        let message = Message::decode(&bytes).expect("STUN");
        assert_eq!(
            message.message_type(),
            MessageType::new(Method::DATA, Class::Indication)
        );
        let response = Response {
            bytes: bytes.clone(),
        };
        Some(Relayed::Data(
            response
                .xor_address(AttributeType::XOR_PEER_ADDRESS)
                .unwrap(),
            response.raw(AttributeType::DATA).unwrap(),
        ))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    Data(SocketAddr, Vec<u8>),
    Channel(u16, Vec<u8>),
}

fn rand_start() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1_000_000, Ordering::Relaxed)
}

/// A UDP peer on loopback.
pub struct Peer {
    pub socket: UdpSocket,
}

impl Peer {
    pub async fn new() -> Self {
        Self::on("127.0.0.1").await
    }

    /// A peer on another loopback address (Linux routes all of 127.0.0.0/8 locally).
    pub async fn on(ip: &str) -> Self {
        Self {
            socket: UdpSocket::bind((ip, 0)).await.unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub async fn recv_within(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 65_536];
        let (len, from) = timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(len);
        Some((buf, from))
    }

    pub async fn recv(&self) -> (Vec<u8>, SocketAddr) {
        self.recv_within(WAIT)
            .await
            .expect("a datagram at the peer")
    }

    pub async fn send(&self, data: &[u8], to: SocketAddr) {
        self.socket.send_to(data, to).await.unwrap();
    }
}

// ----- coturn's tools -----

/// `turnutils_peer` echoing on a loopback UDP port; ends when dropped.
pub struct CoturnPeer {
    pub port: u16,
    _child: tokio::process::Child,
}

impl CoturnPeer {
    pub async fn start() -> Self {
        let port = free_udp_port();
        let child = tokio::process::Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "turnutils_peer runs (Debian package coturn; scripts/install-deps.sh installs it)",
            );
        // Wait until the port is taken, i.e. the peer listens.
        for _ in 0..100 {
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                return Self {
                    port,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("turnutils_peer did not bind port {port}");
    }
}

/// What `turnutils_uclient` reported at the end of a run.
#[derive(Debug, PartialEq, Eq)]
pub struct UclientReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub send_dropped: u64,
}

/// How a `turnutils_uclient` run ended.
pub struct UclientRun {
    /// The totals it printed, if it got as far as relaying.
    pub report: Option<UclientReport>,
    pub success: bool,
    /// Its stdout and stderr, for failure messages.
    pub output: String,
}

/// Runs `turnutils_uclient` with `args` against the server on `port`.
pub async fn run_uclient(args: &[&str], port: u16) -> UclientRun {
    let mut command = tokio::process::Command::new("turnutils_uclient");
    command
        .args(args)
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect(
        "turnutils_uclient runs (Debian package coturn; scripts/install-deps.sh installs it)",
    );
    let output = timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("turnutils_uclient finishes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let number_after = |key: &str| -> Option<u64> {
        text.lines().rev().find_map(|line| {
            let rest = line.split_once(key)?.1;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    };
    // The final summary: "start_mclient: tot_send_msgs=N, tot_recv_msgs=M" and
    // "Total lost packets L (..%), total send dropped D (..%)".
    let report = (|| {
        Some(UclientReport {
            sent: number_after("tot_send_msgs=")?,
            received: number_after("tot_recv_msgs=")?,
            lost: number_after("Total lost packets ")?,
            send_dropped: number_after("total send dropped ")?,
        })
    })();
    UclientRun {
        report,
        success: output.status.success(),
        output: text,
    }
}

/// A self-signed certificate and key for `localhost`, made with the openssl tool.
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (cert, key)
}
