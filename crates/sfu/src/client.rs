//! One participant's WebRTC session inside a worker: its label, its str0m [`Rtc`], the state
//! of SDP negotiation (which subscriptions wait for an m-line, which m-lines must stop, which
//! sources its own offer declared), its data channels ([`DataChannels`]), the timing of its
//! media (its capture clock as a publisher, the RTP timeline of each m-line it receives; see
//! [`crate::sync`]), the socket addresses it was seen from, and its deadlines.
//!
//! A `Client` decides nothing about routing (that is the [`Router`](crate::Router)'s job) and
//! never touches the socket: the worker moves bytes in and out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Mid};

use crate::channels::DataChannels;
use crate::ids::{ParticipantId, RoomId, TrackId, TrackInfo, TrackSource};
use crate::sync::{CaptureClock, OutTimeline};

/// Source addresses remembered per client for demultiplexing (ICE may try a few).
pub(crate) const MAX_ADDRS: usize = 4;

#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: ParticipantId,
    pub(crate) room: RoomId,
    /// The signaling side's id of the participant: the msid stream id of its tracks.
    pub(crate) label: Arc<str>,
    /// `None` until the participant's first offer is accepted.
    pub(crate) rtc: Option<Rtc>,
    /// ICE and DTLS are up.
    pub(crate) connected: bool,
    /// Remove the client if it is not connected by then.
    pub(crate) connect_deadline: Instant,
    /// When str0m next wants `Input::Timeout`.
    pub(crate) next_timeout: Option<Instant>,
    /// Addresses seen from this client, for the demultiplexer.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Our ICE username fragment for this session (empty before the first offer).
    pub(crate) ufrag: String,
    /// When the last datagram from the client arrived.
    pub(crate) last_input: Instant,
    /// UDP payload bytes received from / sent to the client.
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Queued in the dirty list already.
    pub(crate) dirty: bool,
    /// No renegotiation offer before then (the last one could not be delivered).
    pub(crate) offer_retry_at: Option<Instant>,
    /// Sources declared with the participant's last offer for m-lines not published yet,
    /// used when str0m reports them (`MediaAdded`).
    pub(crate) declared_sources: Vec<(Mid, TrackSource)>,
    /// Its data channels to the engine, and those the engine relays to it.
    pub(crate) data: DataChannels,
    /// Its capture clock on ours, for the wallclock of the frames it publishes.
    pub(crate) capture: CaptureClock,
    /// The RTP timeline of each m-line the engine sends it media on.
    pub(crate) timelines: HashMap<Mid, OutTimeline>,
    /// str0m's congestion control has estimated the bandwidth towards it from TWCC feedback
    /// (then its REMB reports, if any, are ignored).
    pub(crate) twcc: bool,
    /// Our renegotiation offer waiting for the client's answer.
    pending: Option<SdpPendingOffer>,
    /// Subscriptions whose m-line is in the pending offer.
    negotiating: Vec<(TrackId, Mid)>,
    /// m-lines the pending offer stops.
    stopping: Vec<Mid>,
    /// Subscriptions waiting for the next offer.
    to_open: Vec<TrackId>,
    /// m-lines to stop in the next offer.
    to_stop: Vec<Mid>,
}

impl Client {
    pub(crate) fn new(
        id: ParticipantId,
        room: RoomId,
        label: Arc<str>,
        now: Instant,
        connect_timeout: Duration,
    ) -> Self {
        Client {
            id,
            room,
            label,
            rtc: None,
            connected: false,
            connect_deadline: now + connect_timeout,
            next_timeout: None,
            addrs: Vec::new(),
            ufrag: String::new(),
            last_input: now,
            bytes_in: 0,
            bytes_out: 0,
            dirty: false,
            offer_retry_at: None,
            declared_sources: Vec::new(),
            data: DataChannels::default(),
            capture: CaptureClock::default(),
            timelines: HashMap::new(),
            twcc: false,
            pending: None,
            negotiating: Vec::new(),
            stopping: Vec::new(),
            to_open: Vec::new(),
            to_stop: Vec::new(),
        }
    }

    /// The client's own offer was accepted: an offer of ours that crossed it is void (str0m
    /// forgets it too); its changes go back in the queue for the next one.
    pub(crate) fn offer_crossed(&mut self) {
        if self.pending.is_some() {
            self.requeue();
        }
    }

    /// Our offer will not be answered (refused, or never delivered): forget it and queue its
    /// changes again.
    pub(crate) fn requeue(&mut self) {
        self.pending = None;
        for (track, _) in std::mem::take(&mut self.negotiating) {
            self.queue_subscription(track);
        }
        self.to_stop.append(&mut self.stopping);
    }

    pub(crate) fn queue_subscription(&mut self, track: TrackId) {
        if !self.to_open.contains(&track) {
            self.to_open.push(track);
        }
    }

    /// A subscription ended: forget it if not yet negotiated, stop its m-line otherwise.
    pub(crate) fn queue_unsubscription(&mut self, track: TrackId, out_mid: Option<Mid>) {
        self.to_open.retain(|&t| t != track);
        if let Some(mid) = out_mid {
            self.to_stop.push(mid);
            self.timelines.remove(&mid);
        }
        // One still in a pending offer is stopped when its answer arrives (see
        // `answer_accepted`), since the router no longer knows it.
    }

    /// The source declared for the m-line `mid` of the participant's own offer, if any.
    pub(crate) fn declared_source(&self, mid: Mid) -> Option<TrackSource> {
        self.declared_sources
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|&(_, source)| source)
    }

    /// Whether [`Client::make_offer`] would build an offer now (a cheap check before the
    /// worker looks up what the offer needs).
    pub(crate) fn offer_due(&self) -> bool {
        self.connected
            && self.pending.is_none()
            && self.rtc.is_some()
            && !(self.to_open.is_empty() && self.to_stop.is_empty())
    }

    /// Builds a renegotiation offer when there is something to change, the session is up
    /// (so the client has applied our previous answer) and no offer is pending.
    /// `track_info` looks up tracks (which may have gone meanwhile) with their publisher's
    /// label.
    pub(crate) fn make_offer<'a>(
        &mut self,
        track_info: impl Fn(TrackId) -> Option<(&'a TrackInfo, &'a str)>,
    ) -> Option<SdpOffer> {
        if !self.offer_due() {
            return None;
        }
        let rtc = self.rtc.as_mut()?;
        let mut api = rtc.sdp_api();
        for track in self.to_open.drain(..) {
            let Some((info, label)) = track_info(track) else {
                continue;
            };
            // msid: the stream is the publisher's label (camera and microphone) or
            // `<label>-screen`, so a browser groups each set and knows whose it is.
            let mid = api.add_media(
                info.kind,
                Direction::SendOnly,
                Some(info.source.stream_id(label)),
                Some(info.id.to_string()),
                None,
            );
            self.negotiating.push((track, mid));
        }
        for mid in self.to_stop.drain(..) {
            api.stop_media(mid);
            self.stopping.push(mid);
        }
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        Some(offer)
    }

    /// Takes the pending offer for `accept_answer`.
    pub(crate) fn take_pending(&mut self) -> Option<SdpPendingOffer> {
        self.pending.take()
    }

    /// Our offer was answered: these subscriptions now have their m-line.
    pub(crate) fn answer_accepted(&mut self) -> Vec<(TrackId, Mid)> {
        self.stopping.clear();
        std::mem::take(&mut self.negotiating)
    }

    /// A subscription whose track vanished while its m-line was being negotiated.
    pub(crate) fn stop_later(&mut self, mid: Mid) {
        self.to_stop.push(mid);
    }

    pub(crate) fn remember_addr(&mut self, addr: SocketAddr) -> Option<SocketAddr> {
        if self.addrs.contains(&addr) {
            return None;
        }
        let evicted = if self.addrs.len() >= MAX_ADDRS {
            Some(self.addrs.remove(0))
        } else {
            None
        };
        self.addrs.push(addr);
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::MediaKind;

    fn info(id: u64) -> TrackInfo {
        TrackInfo {
            id: TrackId(id),
            publisher: ParticipantId(1),
            mid: Mid::from("0"),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            layers: vec![],
        }
    }

    fn connected_client() -> Client {
        let now = Instant::now();
        let mut c = Client::new(
            ParticipantId(2),
            RoomId::new("r"),
            Arc::from("sub"),
            now,
            Duration::from_secs(1),
        );
        c.rtc = Some(Rtc::builder().build(now));
        c.connected = true;
        c
    }

    #[test]
    fn no_offer_before_connected_or_while_one_is_pending() {
        let track = info(1);
        let mut c = connected_client();
        c.connected = false;
        c.queue_subscription(track.id);
        assert!(
            c.make_offer(|_| Some((&track, "pub"))).is_none(),
            "not connected"
        );
        c.connected = true;
        assert!(c.make_offer(|_| Some((&track, "pub"))).is_some());
        c.queue_subscription(TrackId(2));
        assert!(
            c.make_offer(|_| Some((&track, "pub"))).is_none(),
            "one pending"
        );
        assert!(c.take_pending().is_some());
        assert_eq!(c.answer_accepted().len(), 1);
    }

    #[test]
    fn a_lost_or_crossed_offer_is_requeued_whole() {
        let track = info(1);
        let mut c = connected_client();
        c.queue_subscription(track.id);
        c.queue_unsubscription(TrackId(7), Some(Mid::from("9")));
        assert!(c.make_offer(|_| Some((&track, "pub"))).is_some());
        assert!(c.to_open.is_empty() && c.to_stop.is_empty());

        c.offer_crossed();
        assert!(c.pending.is_none());
        assert_eq!(c.to_open, vec![track.id]);
        assert_eq!(c.to_stop, vec![Mid::from("9")]);
        assert!(
            c.make_offer(|_| Some((&track, "pub"))).is_some(),
            "offered again"
        );

        c.requeue();
        assert_eq!(c.to_open, vec![track.id]);
        c.offer_crossed();
        assert_eq!(c.to_open, vec![track.id], "nothing pending: no duplicate");
    }

    #[test]
    fn offers_name_the_publishers_stream() {
        let camera = info(1);
        let screen = TrackInfo {
            id: TrackId(2),
            source: TrackSource::ScreenShare,
            ..info(2)
        };
        let mut c = connected_client();
        c.queue_subscription(camera.id);
        c.queue_subscription(screen.id);
        let offer = c
            .make_offer(|t| Some((if t == camera.id { &camera } else { &screen }, "k3x9")))
            .unwrap()
            .to_sdp_string();
        let msids: Vec<&str> = offer
            .lines()
            .filter_map(|l| l.strip_prefix("a=msid:"))
            .collect();
        assert_eq!(msids, ["k3x9 t1", "k3x9-screen t2"], "{offer}");
    }

    #[test]
    fn gone_tracks_are_skipped_and_addresses_bounded() {
        let mut c = connected_client();
        c.queue_subscription(TrackId(1));
        c.queue_unsubscription(TrackId(1), None);
        assert!(c.to_open.is_empty());
        c.queue_subscription(TrackId(3));
        assert!(
            c.make_offer(|_| None).is_none(),
            "track gone: nothing to offer"
        );

        for port in 0..MAX_ADDRS as u16 {
            assert_eq!(c.remember_addr(([127, 0, 0, 1], port).into()), None);
        }
        assert_eq!(c.remember_addr(([127, 0, 0, 1], 0).into()), None, "known");
        assert_eq!(
            c.remember_addr(([127, 0, 0, 1], 99).into()),
            Some(([127, 0, 0, 1], 0).into()),
            "oldest evicted"
        );
    }
}
