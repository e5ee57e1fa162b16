//! The `switchboard` server: one process serving the web app, WebSocket signaling (Switchboard
//! protocol on `/ws`, the classic tutorial protocol on `/`), a REST API, Prometheus metrics and
//! a STUN server.
//!
//! How the pieces fit:
//! - [`config`]: one [`Config`] from defaults, TOML, environment and flags.
//! - `http`: the axum router (pages, sockets, REST, metrics).
//! - `ws`: per-socket tasks that decode frames and write replies; no signaling state.
//! - `hub`: the single task that owns the signaling core (`switchboard-signal`) and routes.
//! - [`stun_service`]: UDP and TCP loops around the sans-IO STUN responder.
//!
//! [`start`] binds every socket, spawns the services and returns a [`Server`] handle that
//! reports the bound addresses and shuts everything down gracefully.

pub mod config;
mod http;
mod hub;
mod metrics;
pub mod stun_service;
mod web;
mod ws;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use stun_service::StunMetrics;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Shared by every request handler and socket task; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    config: Arc<Config>,
    hub: hub::HubHandle,
    metrics: Arc<metrics::Metrics>,
    stun_metrics: Arc<StunMetrics>,
    next_conn: Arc<AtomicU64>,
    connection_slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    web: Arc<web::WebAssets>,
    stun_port: Option<u16>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for STUN on {addr}: {source}")]
    Stun { addr: SocketAddr, source: std::io::Error },
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// The HTTP address actually bound (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The STUN address actually bound, UDP and TCP, if STUN is on.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// Stops accepting, tells every WebSocket client the server is going away, and waits (a
    /// few seconds at most) for the services to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
            tracing::warn!("services did not stop within 5 s");
        }
    }
}

/// Binds every socket and starts the services.
pub async fn start(config: Config) -> Result<Server, StartError> {
    config.validate().map_err(StartError::Config)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let stun_metrics = Arc::new(StunMetrics::default());
    let stun_addr = match config.stun_addr {
        Some(addr) => {
            let udp = UdpSocket::bind(addr).await.map_err(|source| StartError::Stun { addr, source })?;
            let bound = udp.local_addr().map_err(|source| StartError::Stun { addr, source })?;
            // TCP on the port UDP got, so one port number serves both.
            let tcp = TcpListener::bind(bound).await.map_err(|source| StartError::Stun { addr: bound, source })?;
            tasks.push(tokio::spawn(stun_service::run_udp(udp, stun_metrics.clone(), shutdown_rx.clone())));
            tasks.push(tokio::spawn(stun_service::run_tcp(
                tcp,
                stun_metrics.clone(),
                shutdown_rx.clone(),
                config.max_stun_tcp_connections,
            )));
            tracing::info!("STUN listening on {bound} (udp, tcp)");
            Some(bound)
        }
        None => None,
    };

    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Http { addr: config.http_addr, source })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| StartError::Http { addr: config.http_addr, source })?;

    let (hub, hub_task) = hub::spawn(config.limits(), shutdown_rx.clone());
    tasks.push(hub_task);
    let state = AppState {
        connection_slots: Arc::new(Semaphore::new(config.max_connections)),
        web: Arc::new(web::WebAssets::new(config.web_dir.clone())),
        config: Arc::new(config),
        hub,
        metrics: Arc::default(),
        stun_metrics,
        next_conn: Arc::new(AtomicU64::new(1)),
        shutdown: shutdown_rx.clone(),
        stun_port: stun_addr.map(|a| a.port()),
    };
    let app = http::router(state);
    let mut http_shutdown = shutdown_rx;
    tasks.push(tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("HTTP server failed: {e}");
        }
    }));
    tracing::info!("HTTP listening on http://{http_addr}");
    Ok(Server { http_addr, stun_addr, shutdown: shutdown_tx, tasks })
}
