//! ICE details for tests of relayed calls: the machine's own non-loopback address (where a
//! test's STUN/TURN server can listen for both browsers), and the candidate pair a page's
//! `RTCPeerConnection` actually selected.

use crate::Browser;
use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use serde_json::json;
use std::net::Ipv4Addr;

/// The first non-loopback IPv4 address of an interface that is up. Inside `scripts/e2e.sh`'s
/// namespace that is its only such address (10.213.7.1), which every browser in the
/// namespace can reach.
pub fn host_ipv4() -> Result<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listing network interfaces");
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its layout.
        if !up
            || entry.ifa_addr.is_null()
            || i32::from(unsafe { (*entry.ifa_addr).sa_family }) != libc::AF_INET
        {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_loopback() && !ip.is_unspecified() {
            found = Some(ip);
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once; `entry` is not used after this.
    unsafe { libc::freeifaddrs(list) };
    found.ok_or_else(|| {
        anyhow!("no non-loopback IPv4 address on this machine (run the tests with scripts/e2e.sh)")
    })
}

/// One side of a selected ICE candidate pair, from the page's `getStats()`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PairCandidate {
    /// `host`, `srflx`, `prflx` or `relay`.
    pub candidate_type: Option<String>,
    /// The candidate's IP address (for a local relay candidate: the relayed address).
    pub address: Option<String>,
    /// The candidate's port.
    pub port: Option<u16>,
    /// `udp` or `tcp`.
    pub protocol: Option<String>,
    /// For a local relay candidate: how the browser talks to the TURN server.
    pub relay_protocol: Option<String>,
}

impl PairCandidate {
    /// `address:port`, as the TURN server writes a relayed address.
    pub fn socket_addr(&self) -> Option<String> {
        Some(format!("{}:{}", self.address.as_deref()?, self.port?))
    }
}

/// What a page's `RTCPeerConnection` to one participant reports about its transport.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SelectedPair {
    /// `getConfiguration().iceTransportPolicy`: `all` or `relay`.
    pub policy: Option<String>,
    /// `connectionState`.
    pub connection_state: String,
    /// The local candidate of the selected pair.
    pub local: PairCandidate,
    /// The remote candidate of the selected pair.
    pub remote: PairCandidate,
    /// The types of every local candidate the connection gathered.
    pub local_candidate_types: Vec<String>,
}

/// Reads the selected candidate pair of the page's connection to `name` straight from its
/// `RTCPeerConnection.getStats()` (the transport's `selectedCandidatePairId` in Chromium,
/// the pair marked `selected` in Firefox), waiting until the connection is connected and
/// has one.
pub async fn selected_pair(page: &Browser, name: &str) -> Result<SelectedPair> {
    let value = page
        .wait_until(
            &format!("a selected candidate pair to {name}"),
            SELECTED_PAIR_JS,
            vec![json!(name)],
        )
        .await?;
    serde_json::from_value(value).context("reading the selected candidate pair")
}

/// Resolves to the selected pair of the connection to `arguments[0]`, or null while there
/// is none (or the connection is not connected yet). No `await`: Firefox runs the script
/// as a plain function.
const SELECTED_PAIR_JS: &str = r"
const room = window.switchboard && window.switchboard.room;
if (!room) return null;
const links = room.links ? Array.from(room.links.values()) : room.link ? [room.link] : [];
const link = links.find((l) => l.name === arguments[0]);
if (!link || link.pc.connectionState !== 'connected') return null;
const pc = link.pc;
const policy = pc.getConfiguration().iceTransportPolicy || null;
return pc.getStats().then((report) => {
  const all = [];
  report.forEach((s) => all.push(s));
  const byId = new Map(all.map((s) => [s.id, s]));
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = (transport && byId.get(transport.selectedCandidatePairId))
    || all.find((s) => s.type === 'candidate-pair' && s.selected)
    || all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
  if (!pair) return null;
  const candidate = (c) => ({
    candidateType: (c && c.candidateType) || null,
    address: (c && (c.address || c.ip)) || null,
    port: (c && c.port) || null,
    protocol: (c && c.protocol) || null,
    relayProtocol: (c && c.relayProtocol) || null,
  });
  return {
    policy,
    connectionState: pc.connectionState,
    local: candidate(byId.get(pair.localCandidateId)),
    remote: candidate(byId.get(pair.remoteCandidateId)),
    localCandidateTypes: Array.from(new Set(
      all.filter((s) => s.type === 'local-candidate').map((s) => s.candidateType))),
  };
});
";
