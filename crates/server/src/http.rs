//! The HTTP front: page routes, the two WebSocket endpoints, REST (including the TURN
//! credentials of `/api/ice-servers` and the admin view of TURN allocations) and metrics,
//! assembled in [`router`] so tests can build exactly what the binary serves.

use crate::AppState;
use crate::hub::Command;
use crate::ws::{self, Protocol};
use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use switchboard_proto::Mode;
use switchboard_signal::validate_room;
use switchboard_turn::{AllocationInfo, Traffic};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing_or_tutorial))
        .route("/ws", get(signaling_socket))
        .route("/r/{room}", get(room_page))
        .route(
            "/random",
            get(|State(s): State<AppState>| async move { s.web.serve("random.html").await }),
        )
        .route(
            "/sender",
            get(|State(s): State<AppState>| async move { s.web.serve("sender.html").await }),
        )
        .route(
            "/receiver",
            get(|State(s): State<AppState>| async move { s.web.serve("receiver.html").await }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/ice-servers", get(ice_servers))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}", get(room))
        .route("/api/turn/allocations", get(turn_allocations))
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
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "the server is at its connection limit",
        )
        .into_response();
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
    if let Some(turn) = &state.turn {
        let Some(stats) = turn.handle.stats().await else {
            return ApiError::unavailable().into_response();
        };
        turn.metrics.render(&stats, &mut out);
    }
    if let Some(sfu) = &state.sfu {
        sfu.render_metrics(&mut out).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[derive(Serialize)]
struct IceServers {
    #[serde(rename = "iceServers")]
    ice_servers: Vec<IceServer>,
    /// Seconds the TURN credentials stay valid for new allocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
}

#[derive(Serialize)]
struct IceServer {
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

/// The `iceServers` for `RTCPeerConnection`: STUN, and TURN with fresh TURN REST API
/// credentials (username `expiry:user`, password `base64(HMAC-SHA1(secret, username))`)
/// for a random user id, so every page load gets its own quota. The host is the announced
/// one, or else the host the browser used to reach us, which is the address it can route
/// to.
async fn ice_servers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut ice_servers = Vec::new();
    let mut ttl = None;
    if let Some(port) = state.stun_port {
        let host = if state.config.announce_host.is_empty() {
            request_host(&headers).unwrap_or_else(|| state.config.http_addr.ip().to_string())
        } else {
            state.config.announce_host.clone()
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        ice_servers.push(IceServer {
            // `?transport=` is only valid on turn: URLs; browsers reject it on stun: ones.
            urls: vec![format!("stun:{host}:{port}")],
            username: None,
            credential: None,
        });
        if let Some(turn) = &state.turn {
            let lifetime = state.config.turn_credential_ttl_secs;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let user = format!("sb{:016x}", rand::thread_rng().r#gen::<u64>());
            let username = switchboard_turn::rest_username(now + lifetime, &user);
            let credential = switchboard_turn::rest_password(turn.secret.as_bytes(), &username);
            let mut urls = vec![
                format!("turn:{host}:{port}?transport=udp"),
                format!("turn:{host}:{port}?transport=tcp"),
            ];
            if let Some(tls_port) = turn.tls_port {
                urls.push(format!("turns:{host}:{tls_port}?transport=tcp"));
            }
            ice_servers.push(IceServer {
                urls,
                username: Some(username),
                credential: Some(credential),
            });
            ttl = Some(lifetime);
        }
    }
    // Credentials must not be cached by a browser or a proxy.
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(IceServers { ice_servers, ttl }),
    )
        .into_response()
}

/// `GET /api/turn/allocations`: every TURN allocation, for operators.
async fn turn_allocations(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = check_admin(&state, peer, &headers) {
        return error.into_response();
    }
    let Some(turn) = &state.turn else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "turn_disabled",
            "TURN is not enabled on this server",
        )
        .into_response();
    };
    match turn.handle.allocations().await {
        Some(list) => {
            let allocations: Vec<Value> = list.iter().map(allocation_json).collect();
            (
                [(header::CACHE_CONTROL, "no-store")],
                Json(json!({ "allocations": allocations })),
            )
                .into_response()
        }
        None => ApiError::unavailable().into_response(),
    }
}

fn allocation_json(info: &AllocationInfo) -> Value {
    let traffic = |t: Traffic| json!({ "bytes": t.bytes, "packets": t.packets });
    json!({
        "username": info.username,
        "transport": info.client.transport.as_str(),
        "client": info.client.addr.to_string(),
        "relay": info.relay.to_string(),
        "expires_in_secs": info.expires_in.as_secs(),
        "age_secs": info.age.as_secs(),
        "permissions": info.permissions.iter().map(|p| json!({
            "peer": p.peer.to_string(),
            "expires_in_secs": p.expires_in.as_secs(),
        })).collect::<Vec<_>>(),
        "channels": info.channels.iter().map(|c| json!({
            "number": c.number,
            "peer": c.peer.to_string(),
            "expires_in_secs": c.expires_in.as_secs(),
        })).collect::<Vec<_>>(),
        "to_peer": traffic(info.to_peer),
        "to_client": traffic(info.to_client),
    })
}

/// The admin API needs `Authorization: Bearer <admin_key>`, or, with no key configured, a
/// caller on loopback.
fn check_admin(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = &state.config.admin_key;
    if key.is_empty() {
        // A reverse proxy on this machine connects from loopback on behalf of anyone: a
        // request it forwarded says so in one of these headers.
        let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|name| headers.contains_key(*name));
        if peer.ip().to_canonical().is_loopback() && !proxied {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "without admin_key the admin API answers only direct requests from loopback",
        ));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared without an early exit, so timing does not reveal how much of a guess is right.
    let same = presented.len() == key.len()
        && presented
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin key",
        ))
    }
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
    match state
        .hub
        .query(|reply| Command::Room(name.clone(), reply))
        .await
    {
        Some(Some(room)) => {
            let media = match &state.sfu {
                Some(sfu) if room.mode == Mode::Sfu => sfu.describe(name).await,
                _ => None,
            };
            let mut body = serde_json::to_value(&room).unwrap_or_default();
            if let (Some(media), Some(object)) = (media, body.as_object_mut()) {
                object.insert("media".into(), media);
            }
            Json(body).into_response()
        }
        Some(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "room_not_found",
            "no such room (rooms exist while someone is in them)",
        )
        .into_response(),
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
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
