//! The one configuration struct, and how it is assembled from defaults, an optional TOML
//! file, `SWITCHBOARD_*` environment variables and command-line flags (later ones win).
//!
//! Defaults live in [`Config::default`] and nowhere else; `--help` documents every flag and
//! `--print-config` prints the effective configuration as a TOML sample, secrets replaced
//! by [`REDACTED`] so that its output can be pasted into a bug report or a chat.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use switchboard_proto::Mode;
use switchboard_signal::Limits;
use switchboard_turn::{Cidr, PeerPolicy, RelayAddress, ServerConfig};

/// What `--print-config` shows instead of a secret that is set. The server refuses it as a
/// secret, so a printed configuration used as a file fails instead of running with it.
pub const REDACTED: &str = "<redacted>";

/// Everything the server can be told. Field names are the TOML keys; each has a flag and an
/// environment variable of the same name (`--max-rooms`, `SWITCHBOARD_MAX_ROOMS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server: web app, WebSocket signaling, REST API, metrics.
    pub http_addr: SocketAddr,
    /// Address of the STUN/TURN server, UDP and TCP on the same port. Empty string turns it
    /// off.
    #[serde(with = "optional")]
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
    /// Answer TURN (RFC 8656) on the STUN port. Off leaves a Binding-only STUN server.
    pub turn_enabled: bool,
    /// REALM of the TURN long-term credentials.
    pub turn_realm: String,
    /// Static TURN users, each `username:password`.
    pub turn_users: Vec<String>,
    /// Shared secret of the TURN REST API credentials that `/api/ice-servers` mints. Empty:
    /// a random secret drawn at every start, so minted credentials end with the process.
    pub turn_secret: String,
    /// How long credentials minted by `/api/ice-servers` may start allocations, in seconds.
    pub turn_credential_ttl_secs: u64,
    /// How long a TURN nonce stays valid before clients must take a fresh one (438 Stale
    /// Nonce), in seconds.
    pub turn_nonce_lifetime_secs: u64,
    /// IP the relay sockets bind to. Empty: the STUN listen IP.
    #[serde(with = "optional")]
    pub turn_relay_ip: Option<IpAddr>,
    /// IP announced to clients as their relayed address: the public IP when the relay IP
    /// is behind a 1:1 NAT. Empty: the relay IP.
    #[serde(with = "optional")]
    pub turn_public_ip: Option<IpAddr>,
    /// An IPv6 relay IP, for clients that ask for an IPv6 relay (when `turn_relay_ip` is
    /// IPv4). Empty: none.
    #[serde(with = "optional")]
    pub turn_relay_ipv6: Option<IpAddr>,
    /// IPv6 address announced for `turn_relay_ipv6`. Empty: the same address.
    #[serde(with = "optional")]
    pub turn_public_ipv6: Option<IpAddr>,
    /// Lowest relay port.
    pub turn_min_port: u16,
    /// Highest relay port.
    pub turn_max_port: u16,
    /// TURN allocations on the whole server.
    pub turn_max_allocations: usize,
    /// TURN allocations per user (REST users count by the part after the expiry).
    pub turn_max_allocations_per_user: usize,
    /// Relayed bytes per second per allocation; 0 is unlimited.
    pub turn_allocation_bandwidth: u64,
    /// Relayed bytes per second for the whole server; 0 is unlimited.
    pub turn_total_bandwidth: u64,
    /// Peer address blocks (CIDR) TURN may relay to although they are loopback, private,
    /// link-local or the server's own. Empty: such peers are refused.
    pub turn_allow_peers: Vec<String>,
    /// Peer address blocks (CIDR) TURN refuses in addition to the built-in ones.
    pub turn_deny_peers: Vec<String>,
    /// Address of TURN over TLS, used when `tls_cert` is set. Empty: the STUN IP, port 5349.
    #[serde(with = "optional")]
    pub turn_tls_addr: Option<SocketAddr>,
    /// PEM certificate chain for TLS (TURN over TLS).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Bearer token for the admin API (`/api/turn/allocations`). Empty: the admin API
    /// answers only to loopback clients.
    pub admin_key: String,
    /// UDP address of the SFU's media socket (ICE-lite: every session of a worker on one
    /// port); worker `i` binds port + `i`. Empty string turns SFU rooms off.
    #[serde(with = "optional")]
    pub sfu_addr: Option<SocketAddr>,
    /// ICE over TCP to the SFU, for browsers whose networks block UDP: each worker also
    /// listens on TCP at its `sfu_addr` port and offers a passive TCP candidate (browsers use
    /// it only when UDP fails).
    pub sfu_tcp: bool,
    /// Offer the SFU's UDP candidate. Off, browsers can reach SFU rooms only over TCP (needs
    /// `sfu_tcp`); meant for testing that path.
    pub sfu_udp: bool,
    /// Estimate the bandwidth towards each SFU subscriber from its congestion-control
    /// feedback (TWCC/REMB) and choose simulcast layers by it. This also paces what the
    /// server sends and probes with padding; off, layers follow tile sizes only and packets
    /// leave as they come (less delay and CPU, for networks known to have room, such as a
    /// LAN broadcast to hundreds of viewers).
    pub sfu_bandwidth_estimation: bool,
    /// IP announced to browsers as the SFU's ICE candidate, e.g. the public IP of a 1:1 NAT.
    /// Empty: the IP `sfu_addr` binds (which must then not be `0.0.0.0`).
    #[serde(with = "optional")]
    pub sfu_public_ip: Option<IpAddr>,
    /// SFU media workers (rooms are pinned to one each); 0: one per CPU core.
    pub sfu_workers: usize,
    /// Peers per SFU room.
    pub max_sfu_participants: usize,
    /// Topology of rooms whose first `join` names no `mode`: `p2p` or `sfu`.
    pub default_mode: Mode,
    /// A peer-to-peer broadcast (`/sender` → `/receiver`) with more receivers than this moves
    /// to the SFU (when on); 0 keeps broadcasts peer-to-peer.
    pub sfu_broadcast_threshold: usize,
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
            turn_enabled: true,
            turn_realm: "switchboard".into(),
            turn_users: Vec::new(),
            turn_secret: String::new(),
            turn_credential_ttl_secs: 86_400,
            turn_nonce_lifetime_secs: 600,
            turn_relay_ip: None,
            turn_public_ip: None,
            turn_relay_ipv6: None,
            turn_public_ipv6: None,
            turn_min_port: 49_152,
            turn_max_port: 65_535,
            turn_max_allocations: 10_000,
            turn_max_allocations_per_user: 50,
            turn_allocation_bandwidth: 0,
            turn_total_bandwidth: 0,
            turn_allow_peers: Vec::new(),
            turn_deny_peers: Vec::new(),
            turn_tls_addr: None,
            tls_cert: None,
            tls_key: None,
            admin_key: String::new(),
            sfu_addr: Some(SocketAddr::from(([127, 0, 0, 1], 7882))),
            sfu_tcp: true,
            sfu_udp: true,
            sfu_bandwidth_estimation: true,
            sfu_public_ip: None,
            sfu_workers: 0,
            max_sfu_participants: limits.max_sfu_participants,
            default_mode: limits.default_mode,
            sfu_broadcast_threshold: limits.sfu_broadcast_threshold,
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
            sfu_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            sfu_workers: 1,
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
            sfu_available: self.sfu_addr.is_some(),
            max_sfu_participants: self.max_sfu_participants,
            default_mode: self.default_mode,
            sfu_broadcast_threshold: self.sfu_broadcast_threshold,
        }
    }

    /// Refuses values that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_message_bytes", self.max_message_bytes),
            ("max_participants", self.max_participants),
            ("max_sfu_participants", self.max_sfu_participants),
            ("max_rooms", self.max_rooms),
            ("max_stun_tcp_connections", self.max_stun_tcp_connections),
            ("turn_max_allocations", self.turn_max_allocations),
            (
                "turn_max_allocations_per_user",
                self.turn_max_allocations_per_user,
            ),
            (
                "turn_credential_ttl_secs",
                self.turn_credential_ttl_secs as usize,
            ),
            (
                "turn_nonce_lifetime_secs",
                self.turn_nonce_lifetime_secs as usize,
            ),
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
        if self.turn_min_port == 0 || self.turn_min_port > self.turn_max_port {
            return Err(format!(
                "turn_min_port..turn_max_port ({}..{}) must be a non-empty range above 0",
                self.turn_min_port, self.turn_max_port
            ));
        }
        if self.turn_realm.is_empty() || self.turn_realm.chars().count() > 127 {
            return Err("turn_realm must be 1 to 127 characters".into());
        }
        let users = self.turn_users()?;
        let placeholder = [
            ("turn_secret", &self.turn_secret),
            ("admin_key", &self.admin_key),
        ]
        .into_iter()
        .chain(
            users
                .iter()
                .map(|(_, password)| ("a turn_users password", password)),
        )
        .find(|(_, secret)| secret.as_str() == REDACTED);
        if let Some((name, _)) = placeholder {
            return Err(format!(
                "{name} is {REDACTED:?}, the placeholder --print-config prints: set the real value"
            ));
        }
        self.peer_blocks()?;
        if self.turn_relay_ipv6.is_some_and(|ip| !ip.is_ipv6())
            || self.turn_public_ipv6.is_some_and(|ip| !ip.is_ipv6())
        {
            return Err("turn_relay_ipv6 and turn_public_ipv6 must be IPv6 addresses".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key must be set together".into());
        }
        if let Some(addr) = self.sfu_addr
            && addr.ip().is_unspecified()
            && self.sfu_public_ip.is_none_or(|ip| ip.is_unspecified())
        {
            return Err(format!(
                "sfu_addr binds {}, which browsers cannot be told: set sfu_public_ip",
                addr.ip()
            ));
        }
        if self.sfu_addr.is_some() && !self.sfu_udp && !self.sfu_tcp {
            return Err(
                "sfu_udp and sfu_tcp are both off: browsers could not reach the SFU".into(),
            );
        }
        if self.default_mode == Mode::Sfu && self.sfu_addr.is_none() {
            return Err("default_mode is sfu but sfu_addr is empty (SFU off)".into());
        }
        Ok(())
    }

    /// The static TURN users as (username, password).
    pub fn turn_users(&self) -> Result<Vec<(String, String)>, String> {
        self.turn_users
            .iter()
            .map(|entry| match entry.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    Ok((user.to_owned(), password.to_owned()))
                }
                _ => Err(format!(
                    "turn_users entry {entry:?} must be \"username:password\""
                )),
            })
            .collect()
    }

    fn peer_blocks(&self) -> Result<(Vec<Cidr>, Vec<Cidr>), String> {
        let parse = |name: &str, list: &[String]| {
            list.iter()
                .map(|text| {
                    text.parse::<Cidr>()
                        .map_err(|e| format!("{name} entry {text:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok((
            parse("turn_allow_peers", &self.turn_allow_peers)?,
            parse("turn_deny_peers", &self.turn_deny_peers)?,
        ))
    }

    /// The TURN core's configuration, for a STUN port bound on `stun_ip`, with the REST
    /// secret in force and fresh randomness.
    pub fn turn_server_config(
        &self,
        stun_ip: IpAddr,
        secret: &str,
        seed: [u8; 32],
    ) -> Result<ServerConfig, String> {
        let relay_ip = self.turn_relay_ip.unwrap_or(stun_ip);
        let public_ip = self.turn_public_ip.unwrap_or(relay_ip);
        if public_ip.is_unspecified() {
            return Err(format!(
                "the relay binds {relay_ip}, which clients cannot be told: set turn_public_ip"
            ));
        }
        if relay_ip.is_ipv4() != public_ip.is_ipv4() {
            return Err("turn_relay_ip and turn_public_ip must be of the same family".into());
        }
        let primary = RelayAddress {
            bind: relay_ip,
            public: public_ip,
        };
        let secondary = self.turn_relay_ipv6.map(|bind| RelayAddress {
            bind,
            public: self.turn_public_ipv6.unwrap_or(bind),
        });
        let (relay_v4, relay_v6) = if relay_ip.is_ipv4() {
            (Some(primary), secondary)
        } else {
            (None, Some(primary))
        };
        let (allow, deny) = self.peer_blocks()?;
        let mut server_addresses = vec![stun_ip];
        if let Some(tls) = self.turn_tls_addr {
            server_addresses.push(tls.ip());
        }
        server_addresses.push(self.http_addr.ip());
        if let Ok(ip) = self.announce_host.parse() {
            server_addresses.push(ip);
        }
        server_addresses.retain(|ip: &IpAddr| !ip.is_unspecified());
        let config = ServerConfig {
            realm: self.turn_realm.clone(),
            users: self.turn_users()?,
            rest_secret: Some(secret.as_bytes().to_vec()),
            relay_v4,
            relay_v6,
            min_port: self.turn_min_port,
            max_port: self.turn_max_port,
            max_allocations: self.turn_max_allocations,
            max_allocations_per_user: self.turn_max_allocations_per_user,
            allocation_bandwidth: self.turn_allocation_bandwidth,
            total_bandwidth: self.turn_total_bandwidth,
            nonce_lifetime: Duration::from_secs(self.turn_nonce_lifetime_secs),
            peer_policy: PeerPolicy {
                allow,
                deny,
                server_addresses,
            },
            seed,
            ..ServerConfig::default()
        };
        config.validate().map_err(|e| format!("TURN: {e}"))?;
        Ok(config)
    }

    /// The configuration as `--print-config` shows it: TOML, with `turn_secret`,
    /// `admin_key` and the passwords of `turn_users` replaced by [`REDACTED`]. An unset
    /// secret stays empty, so the output still tells whether one is set.
    pub fn to_printable_toml(&self) -> Result<String, String> {
        let mut shown = self.clone();
        for secret in [&mut shown.turn_secret, &mut shown.admin_key] {
            if !secret.is_empty() {
                *secret = REDACTED.into();
            }
        }
        for entry in &mut shown.turn_users {
            *entry = match entry.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.into(),
            };
        }
        toml::to_string(&shown).map_err(|e| format!("cannot print config: {e}"))
    }

    /// Builds the configuration from the process's arguments, environment and config file;
    /// with `--print-config`, prints it and exits.
    pub fn from_cli() -> Result<Self, String> {
        let cli = Cli::parse();
        let print = cli.print_config;
        let config = cli.into_config()?;
        if print {
            print!("{}", config.to_printable_toml()?);
            std::process::exit(0);
        }
        Ok(config)
    }
}

/// Optional addresses are written as an empty string when absent, so that the printed
/// configuration shows every key.
mod optional {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.collect_str(value),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        super::parse_optional(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_optional<T: std::str::FromStr>(text: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e| format!("invalid address {text:?}: {e}"))
}

/// Switchboard: signaling, STUN/TURN and a browser app for real-time calls, in one binary.
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
    /// Print the effective configuration as TOML, secrets redacted, and exit.
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
    /// Answer TURN on the STUN port; false leaves Binding-only STUN [default: true].
    #[arg(long, env = "SWITCHBOARD_TURN_ENABLED")]
    turn_enabled: Option<bool>,
    /// REALM of TURN credentials [default: switchboard].
    #[arg(long, env = "SWITCHBOARD_TURN_REALM")]
    turn_realm: Option<String>,
    /// Static TURN users, "username:password", comma-separated or repeated.
    #[arg(
        long,
        env = "SWITCHBOARD_TURN_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    turn_users: Option<Vec<String>>,
    /// Shared secret of TURN REST API credentials [default: random at each start].
    #[arg(long, env = "SWITCHBOARD_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Seconds minted TURN credentials stay valid for new allocations [default: 86400].
    #[arg(long, env = "SWITCHBOARD_TURN_CREDENTIAL_TTL_SECS")]
    turn_credential_ttl_secs: Option<u64>,
    /// Seconds a TURN nonce stays valid [default: 600].
    #[arg(long, env = "SWITCHBOARD_TURN_NONCE_LIFETIME_SECS")]
    turn_nonce_lifetime_secs: Option<u64>,
    /// IP relay sockets bind to [default: the STUN listen IP].
    #[arg(long, env = "SWITCHBOARD_TURN_RELAY_IP")]
    turn_relay_ip: Option<String>,
    /// IP announced as the relayed address, e.g. the public IP of a 1:1 NAT [default: the relay IP].
    #[arg(long, env = "SWITCHBOARD_TURN_PUBLIC_IP")]
    turn_public_ip: Option<String>,
    /// Additional IPv6 relay IP [default: none].
    #[arg(long, env = "SWITCHBOARD_TURN_RELAY_IPV6")]
    turn_relay_ipv6: Option<String>,
    /// IPv6 address announced for the IPv6 relay [default: the IPv6 relay IP].
    #[arg(long, env = "SWITCHBOARD_TURN_PUBLIC_IPV6")]
    turn_public_ipv6: Option<String>,
    /// Lowest relay port [default: 49152].
    #[arg(long, env = "SWITCHBOARD_TURN_MIN_PORT")]
    turn_min_port: Option<u16>,
    /// Highest relay port [default: 65535].
    #[arg(long, env = "SWITCHBOARD_TURN_MAX_PORT")]
    turn_max_port: Option<u16>,
    /// TURN allocations on the server [default: 10000].
    #[arg(long, env = "SWITCHBOARD_TURN_MAX_ALLOCATIONS")]
    turn_max_allocations: Option<usize>,
    /// TURN allocations per user [default: 50].
    #[arg(long, env = "SWITCHBOARD_TURN_MAX_ALLOCATIONS_PER_USER")]
    turn_max_allocations_per_user: Option<usize>,
    /// Relayed bytes per second per allocation, 0 = unlimited [default: 0].
    #[arg(long, env = "SWITCHBOARD_TURN_ALLOCATION_BANDWIDTH")]
    turn_allocation_bandwidth: Option<u64>,
    /// Relayed bytes per second in total, 0 = unlimited [default: 0].
    #[arg(long, env = "SWITCHBOARD_TURN_TOTAL_BANDWIDTH")]
    turn_total_bandwidth: Option<u64>,
    /// Peer blocks (CIDR) TURN may relay to despite being private/loopback/own, comma-separated.
    #[arg(long, env = "SWITCHBOARD_TURN_ALLOW_PEERS", value_delimiter = ',')]
    turn_allow_peers: Option<Vec<String>>,
    /// Extra peer blocks (CIDR) TURN refuses, comma-separated.
    #[arg(long, env = "SWITCHBOARD_TURN_DENY_PEERS", value_delimiter = ',')]
    turn_deny_peers: Option<Vec<String>>,
    /// TURN-over-TLS listen address when tls_cert is set [default: STUN IP, port 5349].
    #[arg(long, env = "SWITCHBOARD_TURN_TLS_ADDR")]
    turn_tls_addr: Option<String>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS certificate.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Bearer token for the admin API [default: none, admin API on loopback only].
    #[arg(long, env = "SWITCHBOARD_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// SFU media UDP address; worker i uses port + i; empty turns SFU rooms off [default: 127.0.0.1:7882].
    #[arg(long, env = "SWITCHBOARD_SFU_ADDR")]
    sfu_addr: Option<String>,
    /// SFU also takes ICE over TCP on the sfu_addr port(s), for browsers without UDP [default: true].
    #[arg(long, env = "SWITCHBOARD_SFU_TCP")]
    sfu_tcp: Option<bool>,
    /// Offer the SFU's UDP candidate; false leaves browsers only TCP, for tests [default: true].
    #[arg(long, env = "SWITCHBOARD_SFU_UDP")]
    sfu_udp: Option<bool>,
    /// Choose SFU simulcast layers by each subscriber's estimated bandwidth, with pacing and probing; false: by tile size only [default: true].
    #[arg(long, env = "SWITCHBOARD_SFU_BANDWIDTH_ESTIMATION")]
    sfu_bandwidth_estimation: Option<bool>,
    /// IP announced as the SFU's ICE candidate [default: the sfu_addr IP].
    #[arg(long, env = "SWITCHBOARD_SFU_PUBLIC_IP")]
    sfu_public_ip: Option<String>,
    /// SFU media workers, 0 = one per CPU core [default: 0].
    #[arg(long, env = "SWITCHBOARD_SFU_WORKERS")]
    sfu_workers: Option<usize>,
    /// Peers per SFU room [default: 50].
    #[arg(long, env = "SWITCHBOARD_MAX_SFU_PARTICIPANTS")]
    max_sfu_participants: Option<usize>,
    /// Receivers above which a broadcast moves to the SFU, 0 = never [default: 3].
    #[arg(long, env = "SWITCHBOARD_SFU_BROADCAST_THRESHOLD")]
    sfu_broadcast_threshold: Option<usize>,
    /// Topology of rooms created without a mode: p2p or sfu [default: p2p].
    #[arg(long, env = "SWITCHBOARD_DEFAULT_MODE", value_parser = ["p2p", "sfu"])]
    default_mode: Option<String>,
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
            config.stun_addr = parse_optional(text).map_err(|e| format!("--stun-addr: {e}"))?;
        }
        let optional_ips = [
            (
                "--turn-relay-ip",
                &self.turn_relay_ip,
                &mut config.turn_relay_ip,
            ),
            (
                "--turn-public-ip",
                &self.turn_public_ip,
                &mut config.turn_public_ip,
            ),
            (
                "--turn-relay-ipv6",
                &self.turn_relay_ipv6,
                &mut config.turn_relay_ipv6,
            ),
            (
                "--turn-public-ipv6",
                &self.turn_public_ipv6,
                &mut config.turn_public_ipv6,
            ),
        ];
        for (flag, text, field) in optional_ips {
            if let Some(text) = text {
                *field = parse_optional(text).map_err(|e| format!("{flag}: {e}"))?;
            }
        }
        if let Some(text) = &self.sfu_addr {
            config.sfu_addr = parse_optional(text).map_err(|e| format!("--sfu-addr: {e}"))?;
        }
        if let Some(text) = &self.sfu_public_ip {
            config.sfu_public_ip =
                parse_optional(text).map_err(|e| format!("--sfu-public-ip: {e}"))?;
        }
        if let Some(mode) = &self.default_mode {
            config.default_mode = if mode == "sfu" { Mode::Sfu } else { Mode::P2p };
        }
        if let Some(text) = &self.turn_tls_addr {
            config.turn_tls_addr =
                parse_optional(text).map_err(|e| format!("--turn-tls-addr: {e}"))?;
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
            log,
            turn_enabled,
            turn_realm,
            turn_users,
            turn_secret,
            turn_credential_ttl_secs,
            turn_nonce_lifetime_secs,
            turn_min_port,
            turn_max_port,
            turn_max_allocations,
            turn_max_allocations_per_user,
            turn_allocation_bandwidth,
            turn_total_bandwidth,
            turn_allow_peers,
            turn_deny_peers,
            admin_key,
            sfu_tcp,
            sfu_udp,
            sfu_bandwidth_estimation,
            sfu_workers,
            max_sfu_participants,
            sfu_broadcast_threshold
        );
        if self.web_dir.is_some() {
            config.web_dir = self.web_dir;
        }
        if self.tls_cert.is_some() {
            config.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            config.tls_key = self.tls_key;
        }
        config.validate()?;
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
        std::fs::write(
            &path,
            "http_addr = \"0.0.0.0:9000\"\nmax_rooms = 5\nstun_addr = \"\"\n",
        )
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
    fn turn_defaults_and_flags() {
        let config = cli(&[]).unwrap();
        assert!(config.turn_enabled);
        assert_eq!(config.turn_realm, "switchboard");
        assert_eq!(
            (config.turn_min_port, config.turn_max_port),
            (49_152, 65_535)
        );
        assert_eq!(config.turn_credential_ttl_secs, 86_400);
        assert!(config.turn_allow_peers.is_empty());
        let config = cli(&[
            "--turn-users",
            "alice:one,bob:two:three",
            "--turn-allow-peers",
            "127.0.0.0/8",
            "--turn-allow-peers",
            "10.0.0.0/8",
            "--turn-relay-ip",
            "10.0.0.5",
            "--turn-public-ip",
            "203.0.113.9",
            "--turn-min-port",
            "40000",
            "--turn-max-port",
            "40100",
            "--turn-enabled",
            "false",
        ])
        .unwrap();
        assert_eq!(
            config.turn_users().unwrap(),
            [
                ("alice".to_owned(), "one".to_owned()),
                ("bob".to_owned(), "two:three".to_owned())
            ]
        );
        assert_eq!(config.turn_allow_peers, ["127.0.0.0/8", "10.0.0.0/8"]);
        assert!(!config.turn_enabled);
        let core = config
            .turn_server_config("127.0.0.1".parse().unwrap(), "s", [0; 32])
            .unwrap();
        let relay = core.relay_v4.unwrap();
        assert_eq!(relay.bind.to_string(), "10.0.0.5");
        assert_eq!(relay.public.to_string(), "203.0.113.9");
        assert_eq!((core.min_port, core.max_port), (40_000, 40_100));
        assert_eq!(core.rest_secret.as_deref(), Some(&b"s"[..]));
        assert_eq!(core.peer_policy.allow.len(), 2);
    }

    #[test]
    fn bad_turn_settings_are_refused() {
        let err = cli(&["--turn-users", "nopassword"]).unwrap_err();
        assert!(err.contains("turn_users"), "{err}");
        let err = cli(&["--turn-allow-peers", "10.0.0.0/40"]).unwrap_err();
        assert!(err.contains("turn_allow_peers"), "{err}");
        let err = cli(&["--turn-min-port", "6000", "--turn-max-port", "5000"]).unwrap_err();
        assert!(err.contains("turn_min_port"), "{err}");
        let err = cli(&["--tls-cert", "/x.pem"]).unwrap_err();
        assert!(err.contains("tls_key"), "{err}");
        let err = cli(&["--turn-relay-ip", "here"]).unwrap_err();
        assert!(err.contains("--turn-relay-ip"), "{err}");
        // A wildcard relay needs an announced address.
        let config = cli(&["--turn-relay-ip", "0.0.0.0"]).unwrap();
        let err = config
            .turn_server_config("0.0.0.0".parse().unwrap(), "s", [0; 32])
            .unwrap_err();
        assert!(err.contains("turn_public_ip"), "{err}");
    }

    #[test]
    fn sfu_transports_default_on_and_can_be_set() {
        let config = cli(&[]).unwrap();
        assert!(config.sfu_tcp && config.sfu_udp);
        let config = cli(&["--sfu-tcp", "false"]).unwrap();
        assert!(!config.sfu_tcp && config.sfu_udp);
        let config = toml::from_str::<Config>("sfu_udp = false").unwrap();
        assert!(config.sfu_tcp && !config.sfu_udp);
        config.validate().unwrap();
        let err = cli(&["--sfu-udp", "false", "--sfu-tcp", "false"]).unwrap_err();
        assert!(err.contains("sfu_udp"), "{err}");
        // Without the SFU, they do not matter.
        cli(&["--sfu-addr", "", "--sfu-udp", "false", "--sfu-tcp", "false"]).unwrap();
    }

    #[test]
    fn sfu_bandwidth_estimation_defaults_on_and_can_be_turned_off() {
        assert!(cli(&[]).unwrap().sfu_bandwidth_estimation);
        let config = cli(&["--sfu-bandwidth-estimation", "false"]).unwrap();
        assert!(!config.sfu_bandwidth_estimation);
        let config = toml::from_str::<Config>("sfu_bandwidth_estimation = false").unwrap();
        assert!(!config.sfu_bandwidth_estimation);
    }

    #[test]
    fn printed_config_hides_secrets_but_not_that_they_are_set() {
        let config = cli(&[
            "--print-config",
            "--turn-secret",
            "s3cret-rest",
            "--admin-key",
            "s3cret-admin",
            "--turn-users",
            "alice:s3cret-one,bob:s3cret:two",
            "--turn-realm",
            "example.org",
            "--announce-host",
            "turn.example.org",
        ])
        .unwrap();
        let text = config.to_printable_toml().unwrap();
        for secret in ["s3cret", "two"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        let printed = toml::from_str::<Config>(&text).unwrap();
        assert_eq!(printed.turn_secret, REDACTED);
        assert_eq!(printed.admin_key, REDACTED);
        assert_eq!(
            printed.turn_users,
            ["alice:<redacted>", "bob:<redacted>"],
            "user names stay"
        );
        assert_eq!(printed.turn_realm, "example.org");
        assert_eq!(printed.announce_host, "turn.example.org");
        assert_eq!(printed.http_addr, config.http_addr);
        // Unset secrets stay empty, so the output says they are unset.
        let text = Config::default().to_printable_toml().unwrap();
        let printed = toml::from_str::<Config>(&text).unwrap();
        assert_eq!(
            (printed.turn_secret, printed.admin_key),
            (String::new(), String::new())
        );
        assert!(text.contains("turn_secret = \"\"\n"), "{text}");
    }

    #[test]
    fn the_redaction_placeholder_is_refused_as_a_secret() {
        for args in [
            ["--turn-secret", REDACTED],
            ["--admin-key", REDACTED],
            ["--turn-users", "alice:<redacted>"],
        ] {
            let err = cli(&args).unwrap_err();
            assert!(err.contains("placeholder"), "{err}");
        }
    }

    #[test]
    fn printed_config_parses_back() {
        let config = Config::default();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
    }
}
