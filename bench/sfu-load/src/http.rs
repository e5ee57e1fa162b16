//! Just enough HTTP/1.1 for Janus's REST API on loopback: one request per connection
//! (`Connection: close`), a JSON body out, a JSON body back (by `Content-Length`, chunked,
//! or up to the close). A few requests per client during set-up; nothing on the media path.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response body accepted.
const MAX_BODY: usize = 4 << 20;

/// Sends one request and parses the JSON answer. `timeout` bounds the whole exchange
/// (long polls pass a longer one).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, String> {
    tokio::time::timeout(timeout, exchange(addr, method, path, body))
        .await
        .map_err(|_| format!("{method} {path}: no answer in {timeout:?}"))?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(&payload);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_BODY {
            return Err(format!("{method} {path}: response over {MAX_BODY} bytes"));
        }
        if let Some(body) = complete_body(&raw)? {
            return parse_json(method, path, &raw, &body);
        }
    }
    let body = complete_body(&raw)?.unwrap_or_else(|| body_start(&raw).unwrap_or_default());
    parse_json(method, path, &raw, &body)
}

fn parse_json(method: &str, path: &str, raw: &[u8], body: &[u8]) -> Result<Value, String> {
    let status = status(raw).ok_or_else(|| format!("{method} {path}: no HTTP status line"))?;
    if status != 200 {
        return Err(format!(
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("{method} {path}: bad JSON: {e}"))
}

fn status(raw: &[u8]) -> Option<u16> {
    let line = raw.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn body_start(raw: &[u8]) -> Option<Vec<u8>> {
    Some(raw[header_end(raw)?..].to_vec())
}

/// The body once all of it has arrived, per the headers; `None` while more is due.
fn complete_body(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some(end) = header_end(raw) else {
        return Ok(None);
    };
    let headers = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end..];
    if let Some(len) = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
    {
        let len: usize = len.trim().parse().map_err(|_| "bad Content-Length")?;
        return Ok((body.len() >= len).then(|| body[..len].to_vec()));
    }
    if headers.contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(None)
}

/// Decodes a complete chunked body; `None` until the last (empty) chunk has arrived.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_and_by_chunks() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(complete_body(raw).unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(complete_body(&raw[..raw.len() - 1]).unwrap(), None);
        assert_eq!(status(raw), Some(200));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(complete_body(chunked).unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(complete_body(&chunked[..chunked.len() - 7]).unwrap(), None);
    }
}
