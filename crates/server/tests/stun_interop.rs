//! The STUN service on real sockets: coturn's `turnutils_stunclient` as a third-party
//! client, and our own codec as a client over UDP and TCP (pipelining, garbage, truncated
//! frames, connection limits, idle timeout, shutdown).
//!
//! `turnutils_stunclient` comes from Debian's `coturn` package, which
//! `scripts/install-deps.sh` installs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_server::stun_service::{StunMetrics, TcpLimits, run_tcp, run_tcp_with, run_udp};
use switchboard_stun::{
    AttributeType, DEFAULT_SOFTWARE, ErrorCode, Message, MessageBuilder, MessageType,
    TransactionId, message_len,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);
/// How long to wait before concluding that no answer is coming.
const SILENCE: Duration = Duration::from_millis(300);

struct Service {
    addr: SocketAddr,
    metrics: Arc<StunMetrics>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Service {
    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        timeout(WAIT, self.task)
            .await
            .expect("loop stops on shutdown")
            .unwrap();
    }
}

async fn udp_service() -> Service {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let metrics = Arc::new(StunMetrics::default());
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(run_udp(socket, metrics.clone(), rx));
    Service {
        addr,
        metrics,
        shutdown,
        task,
    }
}

async fn tcp_service(limits: Option<TcpLimits>) -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(StunMetrics::default());
    let (shutdown, rx) = watch::channel(false);
    let task = match limits {
        Some(limits) => tokio::spawn(run_tcp_with(listener, metrics.clone(), rx, limits)),
        None => tokio::spawn(run_tcp(listener, metrics.clone(), rx, 16)),
    };
    Service {
        addr,
        metrics,
        shutdown,
        task,
    }
}

fn id(n: u8) -> TransactionId {
    TransactionId::new([n, 0xA5, 1, 2, 3, 4, 5, 6, 7, 8, 9, n])
}

fn binding_request(n: u8) -> Vec<u8> {
    request_with(n, |_| {})
}

fn request_with(n: u8, fill: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, id(n)).unwrap();
    builder.add_software("switchboard interop test").unwrap();
    fill(&mut builder);
    let len = builder.finish_with_fingerprint().unwrap();
    buf.truncate(len);
    buf
}

/// Checks a success response to request `n` from `client`, exactly.
fn assert_success(bytes: &[u8], n: u8, client: SocketAddr) {
    let response = Message::decode(bytes).expect("a valid STUN message");
    assert_eq!(response.message_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(response.transaction_id(), id(n));
    assert_eq!(response.xor_mapped_address(), Some(client));
    assert_eq!(response.software(), Some(DEFAULT_SOFTWARE));
    assert!(response.has_fingerprint());
}

async fn recv_datagram(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let (len, _) = timeout(SILENCE, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(buf[..len].to_vec())
}

/// `turnutils_stunclient` talking to a running UDP service.
struct StunClientRun {
    /// The client's address, learned from its first datagram (peeked, so independently
    /// of the code under test).
    client: SocketAddr,
    child: tokio::process::Child,
    metrics: Arc<StunMetrics>,
    service: Service,
}

/// Starts `turnutils_stunclient` against a socket that is not served yet, peeks at the
/// first request to learn where it comes from, then starts `run_udp` on that socket.
async fn start_stunclient(flags: &[&str]) -> StunClientRun {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let child = tokio::process::Command::new("turnutils_stunclient")
        .args(flags)
        .args(["-p", &addr.port().to_string(), "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The client never gives up on its own; dropping the handle ends it.
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_stunclient runs (Debian package coturn; scripts/install-deps.sh installs it)");

    let mut peek = [0u8; 64];
    let (_, client) = timeout(WAIT, socket.peek_from(&mut peek))
        .await
        .expect("the client sends a request")
        .unwrap();

    let metrics = Arc::new(StunMetrics::default());
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(run_udp(socket, metrics.clone(), rx));
    let service = Service {
        addr,
        metrics: metrics.clone(),
        shutdown,
        task,
    };
    StunClientRun {
        client,
        child,
        metrics,
        service,
    }
}

/// The addresses in the client's "UDP reflexive addr: A" lines.
fn reflexive_addresses(stdout: &str) -> Vec<SocketAddr> {
    stdout
        .lines()
        .filter_map(|line| line.split_once("UDP reflexive addr: "))
        .map(|(_, addr)| addr.trim().parse().expect("an address"))
        .collect()
}

#[tokio::test]
async fn turnutils_stunclient_sees_its_reflexive_address() {
    let run = start_stunclient(&[]).await;
    // A wrong or missing answer leaves the client waiting, which fails here.
    let output = timeout(Duration::from_secs(10), run.child.wait_with_output())
        .await
        .expect("turnutils_stunclient finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "status {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let reported = reflexive_addresses(&stdout);
    assert!(!reported.is_empty(), "no reflexive address in:\n{stdout}");
    assert!(
        reported.iter().all(|addr| *addr == run.client),
        "expected {}, client said:\n{stdout}",
        run.client
    );
    assert_eq!(run.metrics.requests_udp.load(Ordering::Relaxed), 1);
    assert_eq!(run.metrics.responses.load(Ordering::Relaxed), 1);
    run.service.stop().await;
}

/// In RFC 5780 mode (`-f`) the client first learns its address with a plain Binding
/// request, then sends CHANGE-REQUEST with RESPONSE-PORT and listens only on that new
/// port. This server has a single address and does not implement RFC 5780, so it answers
/// 420 to the request's source as RFC 8489 requires, and the client, listening elsewhere,
/// waits forever: the test checks both exchanges and then ends it.
#[tokio::test]
async fn turnutils_stunclient_rfc5780_mode() {
    use tokio::io::AsyncBufReadExt;

    let mut run = start_stunclient(&["-f"]).await;
    let stdout = run.child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut reported = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reported.is_empty() || run.metrics.errors.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reported {reported:?}, metrics {:?}",
            run.metrics
        );
        if let Ok(Ok(Some(line))) = timeout(Duration::from_millis(50), lines.next_line()).await {
            reported.extend(reflexive_addresses(&line));
        }
    }
    // The client logs each line twice.
    assert!(
        reported.iter().all(|addr| *addr == run.client),
        "expected {}, got {reported:?}",
        run.client
    );
    assert_eq!(run.metrics.requests_udp.load(Ordering::Relaxed), 2);
    assert_eq!(run.metrics.responses.load(Ordering::Relaxed), 1);
    assert_eq!(run.metrics.errors.load(Ordering::Relaxed), 1);
    run.child.kill().await.unwrap();
    run.service.stop().await;
}

#[tokio::test]
async fn udp_binding_garbage_and_error_responses() {
    let service = udp_service().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();

    client
        .send_to(&binding_request(1), service.addr)
        .await
        .unwrap();
    assert_success(&recv_datagram(&client).await.expect("an answer"), 1, me);

    // Garbage, a truncated request and a request with a broken FINGERPRINT get no answer...
    client
        .send_to(b"\x16\x03\x01 definitely not STUN", service.addr)
        .await
        .unwrap();
    client
        .send_to(&binding_request(2)[..30], service.addr)
        .await
        .unwrap();
    let mut bad_fingerprint = binding_request(3);
    *bad_fingerprint.last_mut().unwrap() ^= 0xFF;
    client
        .send_to(&bad_fingerprint, service.addr)
        .await
        .unwrap();
    // ...and do not disturb the next good request: the next datagram answers it.
    client
        .send_to(&binding_request(4), service.addr)
        .await
        .unwrap();
    assert_success(&recv_datagram(&client).await.expect("an answer"), 4, me);

    // An unknown comprehension-required attribute: 420 listing exactly it.
    let unknown = request_with(5, |b| b.add_raw(AttributeType::new(0x7ABC), b"?").unwrap());
    client.send_to(&unknown, service.addr).await.unwrap();
    let bytes = recv_datagram(&client).await.expect("an answer");
    let response = Message::decode(&bytes).unwrap();
    assert_eq!(response.message_type(), MessageType::BINDING_ERROR);
    assert_eq!(response.transaction_id(), id(5));
    assert_eq!(
        response.error_code(),
        Some((ErrorCode::UNKNOWN_ATTRIBUTE, "Unknown Attribute"))
    );
    let listed: Vec<_> = response
        .unknown_attributes()
        .expect("UNKNOWN-ATTRIBUTES")
        .iter()
        .collect();
    assert_eq!(listed, [AttributeType::new(0x7ABC)]);

    // A malformed body behind a valid header: 400.
    let malformed = request_with(6, |b| {
        b.add_raw(AttributeType::XOR_MAPPED_ADDRESS, &[0, 9, 0, 0])
            .unwrap()
    });
    client.send_to(&malformed, service.addr).await.unwrap();
    let bytes = recv_datagram(&client).await.expect("an answer");
    let response = Message::decode(&bytes).unwrap();
    assert_eq!(response.transaction_id(), id(6));
    assert_eq!(
        response.error_code(),
        Some((ErrorCode::BAD_REQUEST, "Bad Request"))
    );

    // A Binding indication is a keep-alive: no answer.
    let mut buf = [0u8; 64];
    let len = MessageBuilder::new(&mut buf, MessageType::BINDING_INDICATION, id(7))
        .unwrap()
        .finish_with_fingerprint()
        .unwrap();
    client.send_to(&buf[..len], service.addr).await.unwrap();
    assert_eq!(recv_datagram(&client).await, None);

    let metrics = &service.metrics;
    assert_eq!(metrics.requests_udp.load(Ordering::Relaxed), 8);
    assert_eq!(metrics.responses.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.errors.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.dropped.load(Ordering::Relaxed), 4);

    let mut text = String::new();
    metrics.render(&mut text);
    for line in [
        "# TYPE switchboard_stun_requests_total counter",
        "switchboard_stun_requests_total{transport=\"udp\"} 8",
        "switchboard_stun_requests_total{transport=\"tcp\"} 0",
        "switchboard_stun_responses_total 2",
        "switchboard_stun_errors_total 2",
        "switchboard_stun_dropped_total 4",
        "# TYPE switchboard_stun_tcp_connections gauge",
        "switchboard_stun_tcp_connections 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    service.stop().await;
}

/// Reads one whole STUN message from a stream.
async fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 20];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let len = message_len(&buf, 4096).unwrap().unwrap();
    buf.resize(len, 0);
    timeout(WAIT, stream.read_exact(&mut buf[20..]))
        .await
        .unwrap()
        .unwrap();
    buf
}

/// True once the server has closed the stream (EOF or reset).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(WAIT, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn tcp_pipelined_and_split_requests() {
    let service = tcp_service(None).await;
    let mut stream = TcpStream::connect(service.addr).await.unwrap();
    let me = stream.local_addr().unwrap();

    // Three requests in one write, answered in order.
    let mut pipelined = Vec::new();
    for n in 1..=3 {
        pipelined.extend_from_slice(&binding_request(n));
    }
    stream.write_all(&pipelined).await.unwrap();
    for n in 1..=3 {
        assert_success(&read_message(&mut stream).await, n, me);
    }

    // One request delivered a few bytes at a time, across the header boundary.
    let request = binding_request(4);
    for chunk in request.chunks(7) {
        stream.write_all(chunk).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_success(&read_message(&mut stream).await, 4, me);

    // 420 over TCP, and a dropped message (bad FINGERPRINT) that keeps the connection.
    let mut bad_fingerprint = binding_request(5);
    *bad_fingerprint.last_mut().unwrap() ^= 1;
    stream.write_all(&bad_fingerprint).await.unwrap();
    stream
        .write_all(&request_with(6, |b| {
            b.add_raw(AttributeType::new(0x0777), &[]).unwrap()
        }))
        .await
        .unwrap();
    let response = read_message(&mut stream).await;
    let response = Message::decode(&response).unwrap();
    assert_eq!(response.transaction_id(), id(6));
    assert_eq!(
        response.error_code().map(|(code, _)| code),
        Some(ErrorCode::UNKNOWN_ATTRIBUTE)
    );
    stream.write_all(&binding_request(7)).await.unwrap();
    assert_success(&read_message(&mut stream).await, 7, me);

    assert_eq!(service.metrics.requests_tcp.load(Ordering::Relaxed), 7);
    assert_eq!(service.metrics.tcp_connections.load(Ordering::Relaxed), 1);
    drop(stream);
    service.stop().await;
}

#[tokio::test]
async fn tcp_bad_streams_close_only_their_connection() {
    let service = tcp_service(None).await;
    let mut healthy = TcpStream::connect(service.addr).await.unwrap();
    let healthy_addr = healthy.local_addr().unwrap();
    healthy.write_all(&binding_request(1)).await.unwrap();
    assert_success(&read_message(&mut healthy).await, 1, healthy_addr);

    // A truncated frame, then close: the listener carries on.
    let mut truncated = TcpStream::connect(service.addr).await.unwrap();
    truncated
        .write_all(&binding_request(2)[..25])
        .await
        .unwrap();
    drop(truncated);

    // Bytes that cannot be STUN close that connection.
    let mut http = TcpStream::connect(service.addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut http).await);

    // So does a header announcing an absurd length.
    let mut huge = TcpStream::connect(service.addr).await.unwrap();
    let mut header = binding_request(3)[..20].to_vec();
    header[2..4].copy_from_slice(&0xFFF0u16.to_be_bytes());
    huge.write_all(&header).await.unwrap();
    assert!(closed_by_server(&mut huge).await);

    // The first connection and new ones still work.
    healthy.write_all(&binding_request(4)).await.unwrap();
    assert_success(&read_message(&mut healthy).await, 4, healthy_addr);
    let mut fresh = TcpStream::connect(service.addr).await.unwrap();
    let fresh_addr = fresh.local_addr().unwrap();
    fresh.write_all(&binding_request(5)).await.unwrap();
    assert_success(&read_message(&mut fresh).await, 5, fresh_addr);

    drop((healthy, fresh));
    service.stop().await;
}

#[tokio::test]
async fn tcp_connection_limit() {
    let limits = TcpLimits {
        max_connections: 1,
        idle_timeout: Duration::from_secs(30),
    };
    let service = tcp_service(Some(limits)).await;
    let mut first = TcpStream::connect(service.addr).await.unwrap();
    let first_addr = first.local_addr().unwrap();
    first.write_all(&binding_request(1)).await.unwrap();
    assert_success(&read_message(&mut first).await, 1, first_addr);

    let mut second = TcpStream::connect(service.addr).await.unwrap();
    assert!(closed_by_server(&mut second).await);
    assert_eq!(service.metrics.tcp_rejected.load(Ordering::Relaxed), 1);

    // The slot comes back when the first connection closes.
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        if service.metrics.tcp_connections.load(Ordering::Relaxed) == 0 {
            third = Some(TcpStream::connect(service.addr).await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = third.expect("the first connection's slot is released");
    let third_addr = third.local_addr().unwrap();
    third.write_all(&binding_request(3)).await.unwrap();
    assert_success(&read_message(&mut third).await, 3, third_addr);
    drop(third);
    service.stop().await;
}

#[tokio::test]
async fn tcp_idle_connections_are_closed() {
    let limits = TcpLimits {
        max_connections: 4,
        idle_timeout: Duration::from_millis(200),
    };
    let service = tcp_service(Some(limits)).await;

    let mut silent = TcpStream::connect(service.addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await);

    // Trickling an incomplete message does not count as activity.
    let mut trickle = TcpStream::connect(service.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let request = binding_request(1);
    let mut closed = false;
    for byte in &request[..request.len() - 1] {
        if trickle.write_all(std::slice::from_ref(byte)).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed || closed_by_server(&mut trickle).await);
    assert!(started.elapsed() < Duration::from_secs(3));
    service.stop().await;
}

#[tokio::test]
async fn shutdown_ends_both_loops_and_open_connections() {
    let udp = udp_service().await;
    let tcp = tcp_service(None).await;
    let mut open = TcpStream::connect(tcp.addr).await.unwrap();
    let open_addr = open.local_addr().unwrap();
    open.write_all(&binding_request(1)).await.unwrap();
    assert_success(&read_message(&mut open).await, 1, open_addr);

    udp.stop().await;
    tcp.stop().await;
    assert!(closed_by_server(&mut open).await);

    // Dropping the sender stops the loops too.
    let udp = udp_service().await;
    drop(udp.shutdown);
    timeout(WAIT, udp.task)
        .await
        .expect("UDP loop stops")
        .unwrap();
    let tcp = tcp_service(None).await;
    drop(tcp.shutdown);
    timeout(WAIT, tcp.task)
        .await
        .expect("TCP loop stops")
        .unwrap();
}
