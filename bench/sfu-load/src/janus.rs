//! Janus's side of the set-up: the REST API of its HTTP transport and the videoroom plugin.
//!
//! One Janus session carries every handle of the run; a task long-polls it
//! (`GET /janus/<session>`) and hands each event to the request waiting for its
//! transaction, another sends a keepalive every 25 s. A publisher is a handle that `join`s
//! a room as `publisher` and `publish`es with our offer; a subscriber is a handle that
//! `join`s as `subscriber` with the feeds it wants (`streams`), answers Janus's offer and
//! sends `start`. Rooms are created by a control handle and destroyed with the session at
//! the end of the run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http;

/// How long a plain request, or the event answering an asynchronous one, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Janus answers an idle long poll after 30 s.
const POLL_TIMEOUT: Duration = Duration::from_secs(45);
/// Well inside Janus's default session timeout (60 s).
const KEEPALIVE: Duration = Duration::from_secs(25);

/// A Janus session and the tasks that keep it.
pub struct Janus {
    addr: SocketAddr,
    session: u64,
    /// Asynchronous requests waiting for their event, by transaction.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next_transaction: AtomicU64,
    /// Events that say something went wrong (hangup, timeout, errors), for the report.
    notes: Mutex<Vec<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Janus {
    /// Creates a session on the Janus at `addr` and starts polling it.
    pub async fn connect(addr: SocketAddr) -> Result<Arc<Janus>, String> {
        let created = http::request(
            addr,
            "POST",
            "/janus",
            Some(&json!({"janus": "create", "transaction": "create"})),
            STEP_TIMEOUT,
        )
        .await?;
        let session = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("create: no session id in {created}"))?;
        let janus = Arc::new(Janus {
            addr,
            session,
            waiting: Mutex::new(HashMap::new()),
            next_transaction: AtomicU64::new(1),
            notes: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let poller = tokio::spawn(poll(janus.clone()));
        let keeper = tokio::spawn(keepalive(janus.clone()));
        lock(&janus.tasks).extend([poller, keeper]);
        Ok(janus)
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next_transaction.fetch_add(1, Ordering::Relaxed))
    }

    fn path(&self, handle: Option<u64>) -> String {
        match handle {
            Some(h) => format!("/janus/{}/{h}", self.session),
            None => format!("/janus/{}", self.session),
        }
    }

    async fn post(&self, handle: Option<u64>, body: &Value) -> Result<Value, String> {
        http::request(
            self.addr,
            "POST",
            &self.path(handle),
            Some(body),
            STEP_TIMEOUT,
        )
        .await
    }

    /// A new handle on the videoroom plugin.
    pub async fn attach(&self) -> Result<u64, String> {
        let body = json!({
            "janus": "attach",
            "plugin": "janus.plugin.videoroom",
            "transaction": self.transaction(),
        });
        let reply = self.post(None, &body).await?;
        reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("attach: {reply}"))
    }

    /// A plugin request that the plugin answers at once (`create`, `destroy`): its data.
    pub async fn request(&self, handle: u64, request: Value) -> Result<Value, String> {
        let body = json!({"janus": "message", "transaction": self.transaction(), "body": request});
        let reply = self.post(Some(handle), &body).await?;
        match reply["janus"].as_str() {
            Some("success") => plugin_data(&reply),
            _ => Err(format!("request {}: {reply}", body["body"])),
        }
    }

    /// A plugin request answered by an event (`join`, `publish`, `start`), with an SDP
    /// when `jsep` is given: the event's plugin data and its `jsep`, if any.
    pub async fn call(
        &self,
        handle: u64,
        request: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>), String> {
        let transaction = self.transaction();
        let mut body = json!({"janus": "message", "transaction": transaction, "body": request});
        if let Some(jsep) = jsep {
            body["jsep"] = jsep;
        }
        let (tx, rx) = oneshot::channel();
        // Registered before the request goes out: the event may beat the reply.
        lock(&self.waiting).insert(transaction.clone(), tx);
        let reply = match self.post(Some(handle), &body).await {
            Ok(reply) => reply,
            Err(e) => {
                lock(&self.waiting).remove(&transaction);
                return Err(e);
            }
        };
        let event = match reply["janus"].as_str() {
            Some("ack") => tokio::time::timeout(STEP_TIMEOUT, rx)
                .await
                .map_err(|_| format!("{}: no event in {STEP_TIMEOUT:?}", body["body"]))?
                .map_err(|_| "the Janus session's poller stopped".to_string())?,
            Some("success") => {
                lock(&self.waiting).remove(&transaction);
                reply
            }
            _ => {
                lock(&self.waiting).remove(&transaction);
                return Err(format!("{}: {reply}", body["body"]));
            }
        };
        let data = plugin_data(&event)?;
        let jsep = event.get("jsep").cloned();
        Ok((data, jsep))
    }

    /// Tells Janus that a handle has no more candidates to trickle (they are all in the SDP).
    pub async fn end_of_candidates(&self, handle: u64) -> Result<(), String> {
        let body = json!({
            "janus": "trickle",
            "transaction": self.transaction(),
            "candidate": {"completed": true},
        });
        self.post(Some(handle), &body).await.map(|_| ())
    }

    /// What went wrong along the way (hangups, timeouts, errors), if anything.
    pub fn notes(&self) -> Vec<String> {
        lock(&self.notes).clone()
    }

    /// Destroys the session (Janus hangs up every handle) and stops its tasks.
    pub async fn destroy(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let body = json!({"janus": "destroy", "transaction": self.transaction()});
        let _ = self.post(None, &body).await;
    }
}

/// The plugin's answer in a reply or event; a plugin-level error becomes `Err`.
fn plugin_data(msg: &Value) -> Result<Value, String> {
    let data = &msg["plugindata"]["data"];
    if data.is_null() {
        return Err(format!("no plugin data in {msg}"));
    }
    if data.get("error_code").is_some() {
        return Err(format!("videoroom: {data}"));
    }
    Ok(data.clone())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Long-polls the session and dispatches its events until the task is aborted.
async fn poll(janus: Arc<Janus>) {
    let path = format!("/janus/{}?maxev=50", janus.session);
    loop {
        let events = match http::request(janus.addr, "GET", &path, None, POLL_TIMEOUT).await {
            Ok(Value::Array(events)) => events,
            Ok(event) => vec![event],
            Err(e) => {
                lock(&janus.notes).push(format!("long poll: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for event in events {
            let waiter = event["transaction"]
                .as_str()
                .and_then(|t| lock(&janus.waiting).remove(t));
            if let Some(waiter) = waiter {
                let _ = waiter.send(event);
                continue;
            }
            if let Some("hangup" | "timeout" | "detached" | "error") = event["janus"].as_str() {
                lock(&janus.notes).push(event.to_string());
            }
        }
    }
}

async fn keepalive(janus: Arc<Janus>) {
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        let body = json!({"janus": "keepalive", "transaction": janus.transaction()});
        if let Err(e) = janus.post(None, &body).await {
            lock(&janus.notes).push(format!("keepalive: {e}"));
        }
    }
}
