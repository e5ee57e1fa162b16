//! The HTTP front: page routes, the two WebSocket endpoints, REST and metrics, assembled in
//! [`router`] so tests can build exactly what the binary serves.

use crate::AppState;
use crate::hub::Command;
use crate::ws::{self, Protocol};
use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use switchboard_signal::validate_room;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing_or_tutorial))
        .route("/ws", get(signaling_socket))
        .route("/r/{room}", get(room_page))
        .route("/random", get(|State(s): State<AppState>| async move { s.web.serve("random.html").await }))
        .route("/sender", get(|State(s): State<AppState>| async move { s.web.serve("sender.html").await }))
        .route("/receiver", get(|State(s): State<AppState>| async move { s.web.serve("receiver.html").await }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/ice-servers", get(ice_servers))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}", get(room))
        .fallback(static_file)
        .with_state(state)
}

/// `/` is both the landing page and, for WebSocket upgrades, the tutorial protocol, because
/// tutorial clients connect to `ws://host:8080` with no path.
async fn landing_or_tutorial(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => accept(state, upgrade, Protocol::Tutorial),
        Err(_) => state.web.serve("index.html").await,
    }
}

async fn signaling_socket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    accept(state, upgrade, Protocol::Switchboard)
}

fn accept(state: AppState, upgrade: WebSocketUpgrade, protocol: Protocol) -> Response {
    let Ok(permit) = state.connection_slots.clone().try_acquire_owned() else {
        state.metrics.connection_refused();
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", "the server is at its connection limit").into_response();
    };
    let limit = ws::hard_frame_limit(state.config.max_message_bytes);
    // Small initial buffers: most sockets are idle most of the time, and buffers grow on
    // demand for the odd large SDP.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| ws::serve_socket(socket, state, protocol, permit))
}

async fn room_page(State(state): State<AppState>, Path(_room): Path<String>) -> Response {
    // An invalid room name still gets the page, which explains the problem to the user.
    state.web.serve("room.html").await
}

async fn static_file(State(state): State<AppState>, uri: Uri) -> Response {
    state.web.serve(uri.path()).await
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(hub) = state.hub.query(Command::Stats).await else {
        return ApiError::unavailable().into_response();
    };
    let mut out = String::with_capacity(8 * 1024);
    state.metrics.render(&hub, &mut out);
    state.stun_metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[derive(Serialize)]
struct IceServers {
    #[serde(rename = "iceServers")]
    ice_servers: Vec<IceServer>,
}

#[derive(Serialize)]
struct IceServer {
    urls: Vec<String>,
}

/// The `iceServers` for `RTCPeerConnection`. The STUN host is the announced one, or else the
/// host the browser used to reach us, which is the address it can route to.
async fn ice_servers(State(state): State<AppState>, headers: HeaderMap) -> Json<IceServers> {
    let mut ice_servers = Vec::new();
    if let Some(port) = state.stun_port {
        let host = if state.config.announce_host.is_empty() {
            request_host(&headers).unwrap_or_else(|| state.config.http_addr.ip().to_string())
        } else {
            state.config.announce_host.clone()
        };
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        ice_servers.push(IceServer {
            // `?transport=` is only valid on turn: URLs; browsers reject it on stun: ones.
            urls: vec![format!("stun:{host}:{port}")],
        });
    }
    Json(IceServers { ice_servers })
}

/// The host part of the `Host` header, if it is a plausible host name or address.
fn request_host(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let authority: axum::http::uri::Authority = value.parse().ok()?;
    let host = authority.host();
    (!host.is_empty()).then(|| host.to_owned())
}

async fn rooms(State(state): State<AppState>) -> Response {
    match state.hub.query(Command::Rooms).await {
        Some(rooms) => Json(serde_json::json!({ "rooms": rooms })).into_response(),
        None => ApiError::unavailable().into_response(),
    }
}

async fn room(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if let Err(why) = validate_room(&name) {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_room", why).into_response();
    }
    match state.hub.query(|reply| Command::Room(name, reply)).await {
        Some(Some(room)) => Json(room).into_response(),
        Some(None) => ApiError::new(StatusCode::NOT_FOUND, "room_not_found", "no such room (rooms exist while someone is in them)").into_response(),
        None => ApiError::unavailable().into_response(),
    }
}

/// Every REST failure: a status and a JSON body `{"error": {"code", "message"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    fn unavailable() -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
