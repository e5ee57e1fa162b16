//! The `switchboard` server: one process serving the web app, WebSocket signaling (Switchboard
//! protocol on `/ws`, the classic tutorial protocol on `/`), a REST API, Prometheus metrics and
//! a STUN/TURN server.
//!
//! How the pieces fit:
//! - [`config`]: one [`Config`] from defaults, TOML, environment and flags.
//! - `http`: the axum router (pages, sockets, REST, metrics).
//! - `ws`: per-socket tasks that decode frames and write replies; no signaling state.
//! - `hub`: the single task that owns the signaling core (`switchboard-signal`) and routes.
//! - `tutorial`: the tutorial protocol's two slots, which socket readers route on themselves.
//! - `sfu_bridge`: carries the core's media actions for SFU rooms to the media engine
//!   (`switchboard-sfu`) and its answers and offers back to the participants.
//! - [`stun_service`]: UDP and TCP loops around the sans-IO STUN responder, used when TURN
//!   is off.
//! - [`turn_service`]: the driver of the sans-IO TURN core (`switchboard-turn`), which also
//!   answers Binding: client-facing UDP, TCP and TLS, relay sockets, timers.
//!
//! [`start`] binds every socket, spawns the services and returns a [`Server`] handle that
//! reports the bound addresses and shuts everything down gracefully.

pub mod config;
mod http;
mod hub;
mod metrics;
mod published;
mod sfu_bridge;
pub mod stun_service;
mod tls;
pub mod turn_service;
mod tutorial;
mod web;
mod ws;

pub use config::Config;

use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stun_service::StunMetrics;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use turn_service::{TurnHandle, TurnMetrics, TurnSockets};

/// Shared by every request handler and socket task; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    config: Arc<Config>,
    hub: hub::HubHandle,
    tutorial: Arc<tutorial::TutorialBoard>,
    /// The SFU, when on.
    sfu: Option<sfu_bridge::BridgeHandle>,
    metrics: Arc<metrics::Metrics>,
    stun_metrics: Arc<StunMetrics>,
    next_conn: Arc<AtomicU64>,
    connection_slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    web: Arc<web::WebAssets>,
    stun_port: Option<u16>,
    turn: Option<TurnState>,
}

/// What the HTTP front needs to know about a running TURN service.
#[derive(Clone)]
pub(crate) struct TurnState {
    handle: TurnHandle,
    metrics: Arc<TurnMetrics>,
    /// The REST API secret credentials are minted with.
    secret: Arc<str>,
    tls_port: Option<u16>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for STUN on {addr}: {source}")]
    Stun {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for TURN over TLS on {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load the TLS certificate or key: {0}")]
    TlsConfig(String),
    #[error("cannot start the SFU: {0}")]
    Sfu(#[from] switchboard_sfu::SfuError),
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    turn_tls_addr: Option<SocketAddr>,
    turn_secret: Option<Arc<str>>,
    sfu_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// The HTTP address actually bound (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The STUN address actually bound, UDP and TCP, if STUN is on. TURN, when enabled,
    /// answers on the same address.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// The TURN-over-TLS address actually bound, if a certificate is configured.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.turn_tls_addr
    }

    /// The TURN REST API secret in force (the configured one, or the one drawn at start).
    pub fn turn_secret(&self) -> Option<&str> {
        self.turn_secret.as_deref()
    }

    /// The UDP addresses of the SFU's media workers, as bound; empty when the SFU is off.
    pub fn sfu_addrs(&self) -> &[SocketAddr] {
        &self.sfu_addrs
    }

    /// Stops accepting, tells every WebSocket client the server is going away, and waits (a
    /// few seconds at most) for the services to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
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
    let mut turn = None;
    let mut turn_tls_addr = None;
    let stun_addr = match config.stun_addr {
        Some(addr) => {
            let (udp, tcp, bound) = bind_stun(addr).await?;
            if config.turn_enabled {
                let (state, tls_addr, service_tasks) = start_turn(
                    &config,
                    udp,
                    tcp,
                    bound,
                    stun_metrics.clone(),
                    shutdown_rx.clone(),
                )
                .await?;
                turn = Some(state);
                turn_tls_addr = tls_addr;
                tasks.extend(service_tasks);
                match tls_addr {
                    Some(tls) => {
                        tracing::info!("STUN/TURN listening on {bound} (udp, tcp) and {tls} (tls)")
                    }
                    None => tracing::info!("STUN/TURN listening on {bound} (udp, tcp)"),
                }
            } else {
                tasks.push(tokio::spawn(stun_service::run_udp(
                    udp,
                    stun_metrics.clone(),
                    shutdown_rx.clone(),
                )));
                tasks.push(tokio::spawn(stun_service::run_tcp(
                    tcp,
                    stun_metrics.clone(),
                    shutdown_rx.clone(),
                    config.max_stun_tcp_connections,
                )));
                tracing::info!("STUN listening on {bound} (udp, tcp)");
            }
            Some(bound)
        }
        None => None,
    };
    let turn_secret = turn.as_ref().map(|t: &TurnState| t.secret.clone());

    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Http {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Http {
        addr: config.http_addr,
        source,
    })?;

    let sfu = sfu_bridge::start(&config, shutdown_rx.clone()).await?;
    let sfu = sfu.map(|(bridge, task)| {
        tasks.push(task);
        bridge
    });
    let sfu_addrs = sfu.as_ref().map(|b| b.media_addrs()).unwrap_or_default();
    if !sfu_addrs.is_empty() {
        let list: Vec<String> = sfu_addrs.iter().map(|a| a.to_string()).collect();
        let transports = if config.sfu_tcp { "udp and tcp" } else { "udp" };
        tracing::info!("SFU media on {} ({transports})", list.join(", "));
    }
    let (hub, hub_task) = hub::spawn(config.limits(), sfu.clone(), shutdown_rx.clone());
    tasks.push(hub_task);
    let state = AppState {
        connection_slots: Arc::new(Semaphore::new(config.max_connections)),
        web: Arc::new(web::WebAssets::new(config.web_dir.clone())),
        config: Arc::new(config),
        hub,
        tutorial: Arc::default(),
        sfu,
        metrics: Arc::default(),
        stun_metrics,
        next_conn: Arc::new(AtomicU64::new(1)),
        shutdown: shutdown_rx.clone(),
        stun_port: stun_addr.map(|a| a.port()),
        turn,
    };
    // Peer addresses let the admin API tell loopback callers from others.
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut http_shutdown = shutdown_rx;
    tasks.push(tokio::spawn(async move {
        // Signaling messages are small and latency-bound: never hold them back for Nagle.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::trace!("cannot set TCP_NODELAY: {e}");
            }
        });
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
    Ok(Server {
        http_addr,
        stun_addr,
        turn_tls_addr,
        turn_secret,
        sfu_addrs,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Binds UDP and TCP on one port. With port 0 the UDP socket picks the port, which TCP may
/// find taken (the kernel hands out the same ephemeral range to outgoing TCP
/// connections); then another port is tried.
async fn bind_stun(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), StartError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| StartError::Stun { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| StartError::Stun { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(source) => {
                last_error = Some(StartError::Stun {
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// Builds the TURN core and starts its driver on the STUN sockets (and a TLS listener when
/// a certificate is configured).
async fn start_turn(
    config: &Config,
    udp: UdpSocket,
    tcp: TcpListener,
    bound: SocketAddr,
    stun_metrics: Arc<StunMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(TurnState, Option<SocketAddr>, Vec<JoinHandle<()>>), StartError> {
    let mut rng = rand::rngs::OsRng;
    let secret: Arc<str> = if config.turn_secret.is_empty() {
        let mut bytes = [0u8; 24];
        rng.fill_bytes(&mut bytes);
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into()
    } else {
        config.turn_secret.as_str().into()
    };
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let core_config = config
        .turn_server_config(bound.ip(), &secret, seed)
        .map_err(StartError::Config)?;
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let core = switchboard_turn::Server::new(core_config, std::time::Instant::now(), unix_now)
        .map_err(|e| StartError::Config(format!("TURN: {e}")))?;

    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = tls::acceptor(cert, key).map_err(StartError::TlsConfig)?;
            let addr = config
                .turn_tls_addr
                .unwrap_or(SocketAddr::new(bound.ip(), 5349));
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Tls { addr, source })?;
            Some((listener, acceptor))
        }
        _ => None,
    };
    let tls_addr = match &tls {
        Some((listener, _)) => Some(listener.local_addr().map_err(|source| StartError::Tls {
            addr: bound,
            source,
        })?),
        None => None,
    };
    let metrics = Arc::new(TurnMetrics::default());
    let sockets = TurnSockets {
        udp,
        tcp,
        tls,
        max_connections: config.max_stun_tcp_connections,
    };
    let (handle, tasks) =
        turn_service::spawn(core, sockets, stun_metrics, metrics.clone(), shutdown);
    let state = TurnState {
        handle,
        metrics,
        secret,
        tls_port: tls_addr.map(|a| a.port()),
    };
    Ok((state, tls_addr, tasks))
}
