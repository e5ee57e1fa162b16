//! What a room page's peer connection gathered, tried and selected, read from its own
//! `getStats()` (Chromium and Firefox report the same fields).

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use switchboard_e2e::Browser;

/// One ICE candidate as `getStats()` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: String,
    pub address: String,
    pub port: u16,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}:{}", self.kind, self.address, self.port)
    }
}

/// One candidate pair and how its checks went.
#[derive(Clone, Debug)]
pub struct Pair {
    pub local: Candidate,
    pub remote: Candidate,
    /// `frozen`, `waiting`, `in-progress`, `succeeded` or `failed`.
    pub state: String,
}

impl Pair {
    /// Whether media on this pair goes through a TURN relay (either end is a relay
    /// candidate).
    pub fn relayed(&self) -> bool {
        self.local.kind == "relay" || self.remote.kind == "relay"
    }
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <-> {} ({})", self.local, self.remote, self.state)
    }
}

/// The ICE state of a page's connection to one other participant.
#[derive(Clone, Debug)]
pub struct IceReport {
    /// The other participant's display name.
    pub name: String,
    pub connection_state: String,
    pub local: Vec<Candidate>,
    pub remote: Vec<Candidate>,
    pub pairs: Vec<Pair>,
    /// The pair media flows on, if any.
    pub selected: Option<Pair>,
}

impl IceReport {
    /// Whether this page gathered (local) or received (remote) a candidate of `kind`.
    pub fn has_local(&self, kind: &str) -> bool {
        self.local.iter().any(|c| c.kind == kind)
    }

    pub fn has_remote(&self, kind: &str) -> bool {
        self.remote.iter().any(|c| c.kind == kind)
    }

    /// Pairs whose checks succeeded.
    pub fn succeeded(&self) -> impl Iterator<Item = &Pair> {
        self.pairs.iter().filter(|p| p.state == "succeeded")
    }

    /// A multi-line summary for messages and logs.
    pub fn describe(&self) -> String {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "(none)".to_string()
            } else {
                items.join(", ")
            }
        };
        format!(
            "to {}: {}; selected: {}\n  local: {}\n  remote: {}\n  pairs: {}",
            self.name,
            self.connection_state,
            self.selected
                .as_ref()
                .map_or_else(|| "(none)".to_string(), Pair::to_string),
            list(self.local.iter().map(Candidate::to_string).collect()),
            list(self.remote.iter().map(Candidate::to_string).collect()),
            list(self.pairs.iter().map(Pair::to_string).collect()),
        )
    }
}

/// Reads every peer connection of the room page in `browser`. The script returns a
/// Promise and uses no `await` (Firefox runs it as a plain function).
const ICE_JS: &str = r#"
const room = window.switchboard && window.switchboard.room;
if (!room || !room.links) return [];
const candidate = (c) => c ? {
  kind: c.candidateType || null,
  address: c.address || c.ip || '',
  port: c.port || 0,
} : null;
return Promise.all([...room.links.values()].map((link) => link.pc.getStats().then((report) => {
  const all = [];
  report.forEach((s) => all.push(s));
  const byId = new Map(all.map((s) => [s.id, s]));
  const pair = (p) => p ? {
    local: candidate(byId.get(p.localCandidateId)),
    remote: candidate(byId.get(p.remoteCandidateId)),
    state: p.state,
  } : null;
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const selected = (transport && byId.get(transport.selectedCandidatePairId))
    || all.find((s) => s.type === 'candidate-pair' && s.selected)
    || null;
  return {
    name: link.name,
    connectionState: link.pc.connectionState,
    local: all.filter((s) => s.type === 'local-candidate').map(candidate),
    remote: all.filter((s) => s.type === 'remote-candidate').map(candidate),
    pairs: all.filter((s) => s.type === 'candidate-pair').map(pair),
    selected: pair(selected),
  };
})));
"#;

/// The ICE state of every connection of the room page in `browser`.
pub async fn ice_reports(browser: &Browser) -> Result<Vec<IceReport>> {
    let value = browser.js(ICE_JS, vec![]).await?;
    let items = value
        .as_array()
        .ok_or_else(|| anyhow!("[{}] ICE report is not a list: {value}", browser.label()))?;
    items
        .iter()
        .map(parse_report)
        .collect::<Result<_>>()
        .with_context(|| format!("[{}] reading the ICE report {value}", browser.label()))
}

/// The ICE state of `browser`'s connection to participant `other`.
pub async fn ice_report(browser: &Browser, other: &str) -> Result<IceReport> {
    ice_reports(browser)
        .await?
        .into_iter()
        .find(|r| r.name == other)
        .ok_or_else(|| anyhow!("[{}] has no connection to {other}", browser.label()))
}

fn parse_report(v: &Value) -> Result<IceReport> {
    let candidates = |key: &str| -> Result<Vec<Candidate>> {
        v[key]
            .as_array()
            .map(|items| items.iter().map(parse_candidate).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    };
    let pairs = v["pairs"]
        .as_array()
        .map(|items| items.iter().filter_map(parse_pair).collect())
        .unwrap_or_default();
    Ok(IceReport {
        name: v["name"].as_str().unwrap_or_default().to_string(),
        connection_state: v["connectionState"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        local: candidates("local")?,
        remote: candidates("remote")?,
        pairs,
        selected: parse_pair(&v["selected"]),
    })
}

fn parse_candidate(v: &Value) -> Result<Candidate> {
    Ok(Candidate {
        kind: v["kind"]
            .as_str()
            .ok_or_else(|| anyhow!("candidate without a type: {v}"))?
            .to_string(),
        address: v["address"].as_str().unwrap_or_default().to_string(),
        port: v["port"].as_u64().unwrap_or(0) as u16,
    })
}

/// A pair whose candidates are both known (Chromium can list pairs whose remote candidate
/// stats are gone).
fn parse_pair(v: &Value) -> Option<Pair> {
    if v.is_null() {
        return None;
    }
    Some(Pair {
        local: parse_candidate(&v["local"]).ok()?,
        remote: parse_candidate(&v["remote"]).ok()?,
        state: v["state"].as_str().unwrap_or_default().to_string(),
    })
}
