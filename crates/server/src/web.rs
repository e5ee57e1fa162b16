//! The browser app and SDK from `web/`, built into the binary (or read from a directory with
//! `--web-dir` while developing it).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};
use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web");

#[derive(Debug, Clone)]
pub enum WebAssets {
    Embedded,
    Directory(PathBuf),
}

impl WebAssets {
    pub fn new(dir: Option<PathBuf>) -> Self {
        dir.map_or(WebAssets::Embedded, WebAssets::Directory)
    }

    /// The file at `path` (relative to `web/`), or 404.
    pub async fn serve(&self, path: &str) -> Response {
        match self.load(path).await {
            Some(body) => {
                let mut response = body.into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(mime_for(path)),
                );
                // The app is small and changes with the binary; revalidating is cheap.
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
            None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        }
    }

    async fn load(&self, path: &str) -> Option<Cow<'static, [u8]>> {
        let relative = safe_relative(path)?;
        match self {
            WebAssets::Embedded => EMBEDDED
                .get_file(&relative)
                .map(|f| Cow::Borrowed(f.contents())),
            WebAssets::Directory(root) => tokio::fs::read(root.join(&relative))
                .await
                .ok()
                .map(Cow::Owned),
        }
    }
}

/// Rejects `..`, absolute paths and anything else that could leave the web root.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    let candidate = Path::new(trimmed);
    candidate
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| candidate.to_path_buf())
}

fn mime_for(path: &str) -> &'static str {
    match Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_web_root() {
        assert_eq!(
            safe_relative("/sdk/switchboard.js"),
            Some(PathBuf::from("sdk/switchboard.js"))
        );
        assert_eq!(safe_relative("/../Cargo.toml"), None);
        assert_eq!(safe_relative("/sdk/../../x"), None);
        assert_eq!(safe_relative("/"), None);
        assert_eq!(
            safe_relative("//etc/passwd"),
            Some(PathBuf::from("etc/passwd"))
        );
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_for("a/b.js"), "text/javascript; charset=utf-8");
        assert_eq!(mime_for("index.html"), "text/html; charset=utf-8");
        assert_eq!(mime_for("x"), "application/octet-stream");
    }
}
