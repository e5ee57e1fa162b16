//! The `switchboard` binary, run in the lab's public namespace with command-line flags as an
//! operator would run it, and a small HTTP client for reaching it from any namespace.

use crate::lab::{Lab, SERVER_IP};
use anyhow::{Context, Result, bail, ensure};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_e2e::in_netns;

/// HTTP port of the server (web app, signaling, `/api/ice-servers`, `/metrics`).
pub const HTTP_PORT: u16 = 8080;
/// STUN/TURN port of the server (UDP and TCP).
pub const STUN_PORT: u16 = 3478;

/// Whether the server offers TURN relays in `/api/ice-servers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    /// STUN and TURN on 3478, `turn:` URLs with REST credentials in `/api/ice-servers`.
    Turn,
    /// `--turn-enabled false`: Binding-only STUN, no `turn:` URL.
    StunOnly,
}

/// A running `switchboard` process. Dropping it kills it.
pub struct SwitchboardProcess {
    child: Child,
    log_path: PathBuf,
    netns: String,
}

/// The binary under test: `SWITCHBOARD_BIN`, else the workspace's debug build.
pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/switchboard")
        })
}

impl SwitchboardProcess {
    /// Starts the server in `lab`'s public namespace on [`SERVER_IP`] and waits until it
    /// answers HTTP.
    pub async fn start(lab: &Lab, relay: Relay) -> Result<SwitchboardProcess> {
        let started = Instant::now();
        let binary = binary();
        ensure!(
            binary.is_file(),
            "{} not found: build it first (cargo build -p switchboard-server) or set SWITCHBOARD_BIN",
            binary.display()
        );
        let log_path = std::env::temp_dir().join(format!("{}-switchboard.log", lab.public));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut args: Vec<String> = [
            "--http-addr",
            &format!("{SERVER_IP}:{HTTP_PORT}"),
            "--stun-addr",
            &format!("{SERVER_IP}:{STUN_PORT}"),
            "--announce-host",
            &SERVER_IP.to_string(),
            "--log",
            "info,switchboard_turn=debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match relay {
            Relay::Turn => args.extend(["--turn-enabled".into(), "true".into()]),
            Relay::StunOnly => args.extend(["--turn-enabled".into(), "false".into()]),
        }
        // `ip netns exec` execs the binary, so the child is the server itself.
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.public])
            .arg(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting switchboard in the public namespace")?;
        let mut server = SwitchboardProcess {
            child,
            log_path,
            netns: lab.public.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("switchboard exited with {status}:\n{}", server.log_tail(30));
            }
            if http_get(&server.netns, "/healthz").is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "switchboard did not answer HTTP within 20 s:\n{}",
                    server.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "switchboard {} {} up in {:.1}s",
            binary.display(),
            args.join(" "),
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `GET path` from the public namespace; the body of a 200 response.
    pub fn get(&self, path: &str) -> Result<String> {
        http_get(&self.netns, path)
    }

    /// The value of one Prometheus sample of `/metrics` (`name` with its labels, exactly as
    /// printed), or 0 when absent.
    pub fn metric(&self, sample: &str) -> Result<u64> {
        let text = self.get("/metrics")?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0))
    }
}

impl Drop for SwitchboardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// `GET path` on the server, from a socket opened in namespace `ns` (so a client namespace
/// sees exactly what its browser sees). Returns the body of a 200 response.
pub fn http_get(ns: &str, path: &str) -> Result<String> {
    let addr = SocketAddr::from((SERVER_IP, HTTP_PORT));
    let mut stream = in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })?
    .with_context(|| format!("connecting to {addr} from {ns}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {SERVER_IP}:{HTTP_PORT}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP response to {path}"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "GET {path}: chunked responses are not expected"
    );
    Ok(body.to_string())
}
