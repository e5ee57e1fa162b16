//! A plain static file server for pages that are not Switchboard's own.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;

/// Serves a directory over HTTP on 127.0.0.1 (any free port) until dropped, like a
/// front-end dev server.
pub struct StaticServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StaticServer {
    /// Serves the files under `dir`.
    pub async fn start(dir: &Path) -> Result<StaticServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the static file server")?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StaticServer { addr, task })
    }

    /// `http://localhost:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
