//! Prometheus text exposition for `/metrics`.
//!
//! Transport counters are atomics bumped by socket tasks; everything about rooms and messages
//! comes from the hub, which owns that state, so nothing here needs a lock. (Relays that socket
//! readers deliver themselves are counted in the hub's atomic `RelayCounts`, which the hub adds
//! to the core's message counts in its `HubStats`.)

use crate::hub::HubStats;
use crate::ws::Protocol;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use switchboard_proto::{ErrorCode, MessageKind};

#[derive(Debug, Default)]
pub struct Metrics {
    opened: [AtomicU64; 2],
    closed: [AtomicU64; 2],
    refused: AtomicU64,
}

fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Switchboard => 0,
        Protocol::Tutorial => 1,
    }
}

const PROTOCOL_LABELS: [&str; 2] = ["switchboard", "tutorial"];

impl Metrics {
    pub fn connections_opened(&self, protocol: Protocol) {
        self.opened[slot(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connections_closed(&self, protocol: Protocol) {
        self.closed[slot(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket refused because the server was at its connection limit.
    pub fn connection_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, hub: &HubStats, out: &mut String) {
        header(
            out,
            "switchboard_connections",
            "gauge",
            "Open WebSocket connections.",
        );
        for (i, label) in PROTOCOL_LABELS.iter().enumerate() {
            let open = self.opened[i]
                .load(Ordering::Relaxed)
                .saturating_sub(self.closed[i].load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "switchboard_connections{{protocol=\"{label}\"}} {open}"
            );
        }
        header(
            out,
            "switchboard_connections_total",
            "counter",
            "WebSocket connections accepted.",
        );
        for (i, label) in PROTOCOL_LABELS.iter().enumerate() {
            let total = self.opened[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "switchboard_connections_total{{protocol=\"{label}\"}} {total}"
            );
        }
        header(
            out,
            "switchboard_connections_refused_total",
            "counter",
            "WebSocket upgrades refused at the connection limit.",
        );
        let _ = writeln!(
            out,
            "switchboard_connections_refused_total {}",
            self.refused.load(Ordering::Relaxed)
        );
        header(
            out,
            "switchboard_slow_disconnects_total",
            "counter",
            "Connections closed because they could not keep up with their messages.",
        );
        let _ = writeln!(
            out,
            "switchboard_slow_disconnects_total {}",
            hub.slow_disconnects
        );

        let core = &hub.core;
        header(
            out,
            "switchboard_rooms",
            "gauge",
            "Rooms, random pairs included.",
        );
        let _ = writeln!(out, "switchboard_rooms {}", core.rooms);
        header(
            out,
            "switchboard_participants",
            "gauge",
            "Participants in rooms, including those within their resume grace period.",
        );
        let _ = writeln!(out, "switchboard_participants {}", core.participants);
        header(
            out,
            "switchboard_random_waiting",
            "gauge",
            "Connections waiting in the random lobby.",
        );
        let _ = writeln!(out, "switchboard_random_waiting {}", core.lobby_waiting);
        header(
            out,
            "switchboard_messages_total",
            "counter",
            "Signaling messages accepted, by type.",
        );
        for kind in MessageKind::ALL {
            let _ = writeln!(
                out,
                "switchboard_messages_total{{type=\"{}\"}} {}",
                kind.as_str(),
                core.messages[kind.index()]
            );
        }
        header(
            out,
            "switchboard_errors_total",
            "counter",
            "Error messages sent to clients, by code.",
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "switchboard_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                core.errors[code.index()]
            );
        }
    }
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
