//! The Switchboard server under test, started inside the test process.

use anyhow::{Context, Result, anyhow};
use std::net::SocketAddr;
use switchboard_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Switchboard server running inside the test process.
pub struct TestServer {
    server: Option<Server>,
    addr: SocketAddr,
}

impl TestServer {
    /// Starts a server with [`Config::for_tests`] (HTTP on 127.0.0.1, any free port).
    pub async fn start() -> Result<TestServer> {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server with [`Config::for_tests`] changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<TestServer> {
        crate::init_logging();
        let mut config = Config::for_tests();
        tweak(&mut config);
        let server = switchboard_server::start(config)
            .await
            .map_err(|e| anyhow::anyhow!("starting the switchboard server: {e}"))?;
        let addr = server.http_addr();
        Ok(TestServer {
            server: Some(server),
            addr,
        })
    }

    /// The port the HTTP front listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://localhost:{port}{path}`: `localhost` is a secure context, so pages may use
    /// the camera.
    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port())
    }

    /// `ws://localhost:{port}{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://localhost:{}{path}", self.port())
    }

    /// The STUN/TURN address actually bound (UDP and TCP), if STUN is on.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(Server::stun_addr)
    }

    /// The UDP addresses the SFU's media workers bound (empty when the SFU is off).
    pub fn sfu_addrs(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .map(|s| s.sfu_addrs().to_vec())
            .unwrap_or_default()
    }

    /// `GET {path}` from the HTTP front, from loopback (which the admin API trusts), as
    /// plain HTTP/1.0: the status code and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
                self.port()
            );
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
            .await
            .map_err(|_| anyhow!("GET {path}: no answer within 10 s"))?
            .with_context(|| format!("GET {path}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("GET {path}: malformed response: {text}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("GET {path}: no status in {head:?}"))?;
        Ok((status, body.to_string()))
    }

    /// `GET {path}`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == 200, "GET {path}: status {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = self.get("/metrics").await?;
        anyhow::ensure!(status == 200, "GET /metrics: status {status}: {body}");
        Ok(body)
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            let started = std::time::Instant::now();
            server.shutdown().await;
            println!(
                "server shut down in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The value of one sample in Prometheus text, named with its labels exactly as the server
/// writes them, e.g. `switchboard_turn_relayed_bytes_total{direction="to_peer"}`.
pub fn metric_value(metrics: &str, sample: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}
