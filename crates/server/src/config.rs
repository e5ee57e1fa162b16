//! The one configuration struct, and how it is assembled from defaults, an optional TOML
//! file, `SWITCHBOARD_*` environment variables and command-line flags (later ones win).
//!
//! Defaults live in [`Config::default`] and nowhere else; `--help` documents every flag and
//! `--print-config` prints the effective configuration as a TOML sample.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_signal::Limits;

/// Everything the server can be told. Field names are the TOML keys; each has a flag and an
/// environment variable of the same name (`--max-rooms`, `SWITCHBOARD_MAX_ROOMS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server: web app, WebSocket signaling, REST API, metrics.
    pub http_addr: SocketAddr,
    /// Address of the STUN server, UDP and TCP on the same port. Empty string turns it off.
    #[serde(with = "optional_addr")]
    pub stun_addr: Option<SocketAddr>,
    /// Host name or IP that browsers should use to reach the STUN server in
    /// `/api/ice-servers`. Empty: the host the browser used to load the page.
    pub announce_host: String,
    /// Concurrent WebSocket connections, both protocols together.
    pub max_connections: usize,
    /// Largest signaling message accepted, in bytes; larger ones are answered with
    /// `message_too_large`.
    pub max_message_bytes: usize,
    /// Peers (and the sender) per room.
    pub max_participants: usize,
    /// Receivers per broadcast room.
    pub max_receivers: usize,
    /// Rooms per server.
    pub max_rooms: usize,
    /// Sustained messages per second per connection; 0 disables rate limiting.
    pub rate_limit: u32,
    /// Burst of messages allowed above the sustained rate.
    pub rate_burst: u32,
    /// Seconds a participant whose socket dropped keeps its place to resume.
    pub resume_grace_secs: u64,
    /// Concurrent STUN-over-TCP connections.
    pub max_stun_tcp_connections: usize,
    /// Serve the web app from this directory instead of the copy built into the binary.
    pub web_dir: Option<PathBuf>,
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `switchboard_server=debug`).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            stun_addr: Some(SocketAddr::from(([127, 0, 0, 1], 3478))),
            announce_host: String::new(),
            max_connections: 20_000,
            max_message_bytes: 64 * 1024,
            max_participants: limits.max_participants,
            max_receivers: limits.max_receivers,
            max_rooms: limits.max_rooms,
            rate_limit: limits.rate_per_sec,
            rate_burst: limits.rate_burst,
            resume_grace_secs: limits.resume_grace.as_secs(),
            max_stun_tcp_connections: 1024,
            web_dir: None,
            log: "info".into(),
        }
    }
}

impl Config {
    /// Ephemeral loopback ports for HTTP and STUN, everything else default: for tests that
    /// run many servers side by side.
    pub fn for_tests() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stun_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Config::default()
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_participants: self.max_participants,
            max_receivers: self.max_receivers,
            max_rooms: self.max_rooms,
            rate_per_sec: self.rate_limit,
            rate_burst: self.rate_burst,
            resume_grace: Duration::from_secs(self.resume_grace_secs),
            sfu_available: false,
        }
    }

    /// Refuses values that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_message_bytes", self.max_message_bytes),
            ("max_participants", self.max_participants),
            ("max_rooms", self.max_rooms),
            ("max_stun_tcp_connections", self.max_stun_tcp_connections),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_participants < 2 {
            return Err("max_participants must be at least 2".into());
        }
        if self.rate_limit > 0 && self.rate_burst == 0 {
            return Err("rate_burst must be at least 1 when rate_limit is set".into());
        }
        Ok(())
    }

    /// Builds the configuration from the process's arguments, environment and config file.
    pub fn from_cli() -> Result<Self, String> {
        Cli::parse().into_config()
    }
}

mod optional_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_optional_addr(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_optional_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e| format!("invalid address {text:?}: {e}"))
}

/// Switchboard: signaling, STUN and a browser app for real-time calls, in one binary.
///
/// Every option can also be set in a TOML file (`--config`, keys as shown by
/// `--print-config`) or by an environment variable `SWITCHBOARD_<OPTION>`. Flags override
/// the environment, which overrides the file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// HTTP/WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// STUN listen address, UDP and TCP; empty turns STUN off [default: 127.0.0.1:3478].
    #[arg(long, env = "SWITCHBOARD_STUN_ADDR")]
    stun_addr: Option<String>,
    /// Host browsers use to reach STUN in /api/ice-servers [default: the page's host].
    #[arg(long, env = "SWITCHBOARD_ANNOUNCE_HOST")]
    announce_host: Option<String>,
    /// Concurrent WebSocket connections [default: 20000].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Largest signaling message in bytes [default: 65536].
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Peers (and the sender) per room [default: 8].
    #[arg(long, env = "SWITCHBOARD_MAX_PARTICIPANTS")]
    max_participants: Option<usize>,
    /// Receivers per broadcast room [default: 50].
    #[arg(long, env = "SWITCHBOARD_MAX_RECEIVERS")]
    max_receivers: Option<usize>,
    /// Rooms per server [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS")]
    max_rooms: Option<usize>,
    /// Messages per second per connection, 0 = unlimited [default: 50].
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// Message burst above the rate [default: 200].
    #[arg(long, env = "SWITCHBOARD_RATE_BURST")]
    rate_burst: Option<u32>,
    /// Seconds a dropped participant may resume [default: 15].
    #[arg(long, env = "SWITCHBOARD_RESUME_GRACE_SECS")]
    resume_grace_secs: Option<u64>,
    /// Concurrent STUN-over-TCP connections [default: 1024].
    #[arg(long, env = "SWITCHBOARD_MAX_STUN_TCP_CONNECTIONS")]
    max_stun_tcp_connections: Option<usize>,
    /// Serve the web app from this directory instead of the built-in copy.
    #[arg(long, env = "SWITCHBOARD_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// Log filter in RUST_LOG syntax [default: info].
    #[arg(long, env = "SWITCHBOARD_LOG")]
    log: Option<String>,
}

impl Cli {
    fn into_config(self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| format!("invalid config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! apply {
            ($($field:ident),*) => {
                $(if let Some(value) = self.$field { config.$field = value; })*
            };
        }
        if let Some(text) = &self.stun_addr {
            config.stun_addr = parse_optional_addr(text).map_err(|e| format!("--stun-addr: {e}"))?;
        }
        apply!(
            http_addr,
            announce_host,
            max_connections,
            max_message_bytes,
            max_participants,
            max_receivers,
            max_rooms,
            rate_limit,
            rate_burst,
            resume_grace_secs,
            max_stun_tcp_connections,
            log
        );
        if self.web_dir.is_some() {
            config.web_dir = self.web_dir;
        }
        config.validate()?;
        if self.print_config {
            print!(
                "{}",
                toml::to_string(&config).map_err(|e| format!("cannot print config: {e}"))?
            );
            std::process::exit(0);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Config, String> {
        let mut full = vec!["switchboard"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    #[test]
    fn defaults_are_the_documented_embedded_ones() {
        let config = cli(&[]).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.stun_addr.unwrap().to_string(), "127.0.0.1:3478");
        assert_eq!(config.max_participants, 8);
    }

    #[test]
    fn file_then_flags_override() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchboard.toml");
        std::fs::write(&path, "http_addr = \"0.0.0.0:9000\"\nmax_rooms = 5\nstun_addr = \"\"\n")
            .unwrap();
        let config = cli(&["--config", path.to_str().unwrap(), "--max-rooms", "7"]).unwrap();
        assert_eq!(config.http_addr.to_string(), "0.0.0.0:9000");
        assert_eq!(config.max_rooms, 7);
        assert_eq!(config.stun_addr, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let err = cli(&["--max-participants", "1"]).unwrap_err();
        assert!(err.contains("max_participants"), "{err}");
        let err = cli(&["--stun-addr", "nowhere"]).unwrap_err();
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn stun_can_be_moved_or_turned_off_from_the_command_line() {
        assert_eq!(cli(&["--stun-addr", ""]).unwrap().stun_addr, None);
        let config = cli(&["--stun-addr", "127.0.0.1:9999"]).unwrap();
        assert_eq!(config.stun_addr.unwrap().port(), 9999);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let err = toml::from_str::<Config>("max_roomz = 3").unwrap_err();
        assert!(err.to_string().contains("max_roomz"), "{err}");
    }

    #[test]
    fn printed_config_parses_back() {
        let config = Config::default();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
    }
}
