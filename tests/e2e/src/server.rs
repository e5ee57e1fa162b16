//! The Switchboard server under test, started inside the test process.

use anyhow::Result;
use std::net::SocketAddr;
use switchboard_server::{Config, Server};

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
