//! The pure building blocks of the router's quality decisions: the measured bitrate and size
//! of each incoming layer, a subscriber's bandwidth estimate history, the allocation of an
//! estimate over a subscriber's video subscriptions, the tile-size rule, and smoothed audio
//! levels.
//!
//! Nothing here knows about rooms or subscriptions: [`Router`](crate::Router) keeps these
//! values in its tracks and participants and combines them. Like the router, every function
//! takes the current [`Instant`] as an argument and never reads the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::media::Rid;

/// Tuning of the quality features: layer choice from bandwidth estimates and tile sizes, and
/// dominant-speaker detection. Defaults in one place: [`Quality::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quality {
    /// How often the router re-evaluates layer choices and dominant speakers.
    pub tick: Duration,
    /// How long a subscriber's bandwidth estimate must stay high enough for a higher layer
    /// before it gets it. A lower estimate lowers the layer at once.
    pub layer_up_hold: Duration,
    /// Whether sessions estimate the bandwidth towards their client (str0m's BWE) and
    /// layers follow the estimate. It comes with str0m's pacer and probing padding; without
    /// it, layers follow tile sizes only and packets leave as soon as they are made.
    pub bandwidth_estimation: bool,
    /// The bandwidth estimate (bit/s) a new session starts from until congestion-control
    /// feedback refines it (str0m's `enable_bwe`).
    pub initial_estimate: u64,
    /// How long the loudest speaker of a room must lead before it becomes the dominant
    /// speaker; also the shortest time between two changes.
    pub dominant_speaker_hold: Duration,
    /// Smoothed audio level (RFC 6464 attenuation in dB below overload: 0 is the loudest,
    /// 127 silence) at or below which a participant counts as speaking.
    pub speaking_level: u8,
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            tick: Duration::from_millis(250),
            layer_up_hold: Duration::from_secs(3),
            bandwidth_estimation: true,
            initial_estimate: 3_000_000,
            dominant_speaker_hold: Duration::from_secs(1),
            speaking_level: 50,
        }
    }
}

/// Length of one bitrate measurement window.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// A layer from which nothing arrived for this long is not flowing (the sender stopped it).
pub(crate) const LAYER_IDLE: Duration = Duration::from_secs(1);
/// Time constant of the audio level smoothing.
const LEVEL_SMOOTHING: Duration = Duration::from_millis(300);
/// An audio level not updated for this long is stale (the track went silent or stopped).
const LEVEL_STALE: Duration = Duration::from_secs(1);
/// Estimates remembered per subscriber (str0m reports a few per second at most).
const MAX_ESTIMATES: usize = 64;
/// The assumed size of the top layer when no frame told it (a browser camera's default).
const DEFAULT_TOP_SIZE: (u32, u32) = (1280, 720);

/// The measured bitrate and frame size of one incoming layer (one simulcast `rid`, or the
/// whole track without simulcast).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerMeter {
    pub(crate) rid: Option<Rid>,
    window_start: Instant,
    window_bytes: u64,
    /// Smoothed bit/s, once a window completed.
    pub(crate) bps: Option<u64>,
    pub(crate) last_frame: Instant,
    /// Width and height from the layer's last keyframe, when the codec tells.
    pub(crate) size: Option<(u32, u32)>,
}

impl LayerMeter {
    pub(crate) fn new(rid: Option<Rid>, now: Instant) -> Self {
        LayerMeter {
            rid,
            window_start: now,
            window_bytes: 0,
            bps: None,
            last_frame: now,
            size: None,
        }
    }

    /// A frame of `bytes` arrived. Each 500 ms window's rate is folded into an exponential
    /// average (weight ¼, a time constant of about 2 s), which absorbs keyframe bursts.
    pub(crate) fn record(&mut self, bytes: usize, now: Instant) {
        if now.saturating_duration_since(self.last_frame) >= LAYER_IDLE {
            // The layer was stopped: the time it was off says nothing about its rate.
            self.window_start = now;
            self.window_bytes = 0;
        }
        self.last_frame = now;
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            let rate = self.window_bytes * 8 * 1_000_000 / micros;
            self.bps = Some(self.bps.map_or(rate, |old| (old * 3 + rate) / 4));
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    /// Whether the layer is arriving and has a measured rate.
    pub(crate) fn flowing(&self, now: Instant) -> bool {
        self.bps.is_some() && now.saturating_duration_since(self.last_frame) < LAYER_IDLE
    }
}

/// The flowing layers of a track in ascending quality: by frame size when every one of them
/// has told its size, else by measured bitrate (simulcast layers of one source always cost
/// more as they grow).
pub(crate) fn rank_layers(meters: &[LayerMeter], now: Instant) -> Vec<&LayerMeter> {
    let mut ranked: Vec<&LayerMeter> = meters.iter().filter(|m| m.flowing(now)).collect();
    if ranked.iter().all(|m| m.size.is_some()) {
        ranked.sort_by_key(|m| {
            (
                m.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h)),
                m.bps,
            )
        });
    } else {
        ranked.sort_by_key(|m| m.bps);
    }
    ranked
}

/// The index of the smallest of `ranked` layers whose size covers a `width`×`height` tile (the
/// top layer if none does). A layer's size is the one its keyframes announced; otherwise it is
/// derived from the top layer's size (announced, or 1280×720 if unknown) halved per step down,
/// the usual simulcast ladder (full, ½, ¼).
pub(crate) fn covering_layer(ranked: &[&LayerMeter], width: u32, height: u32) -> usize {
    let Some(top) = ranked.last() else {
        return 0;
    };
    let top_size = top.size.unwrap_or(DEFAULT_TOP_SIZE);
    let steps = ranked.len() - 1;
    ranked
        .iter()
        .enumerate()
        .position(|(i, m)| {
            let down = (steps - i).min(31) as u32;
            let (w, h) = m.size.unwrap_or((top_size.0 >> down, top_size.1 >> down));
            w >= width && h >= height
        })
        .unwrap_or(steps)
}

/// The width and height announced by a VP8 keyframe (RFC 6386, 9.1: a 3-byte frame tag with
/// P=0, the start code 9d 01 2a, then 14-bit width and height, little endian).
pub(crate) fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let header = frame.get(..10)?;
    if header[0] & 1 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([header[6], header[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([header[8], header[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

/// A subscriber's recent bandwidth estimates (bit/s): the current one decides how low its
/// layers must go, the lowest of the last hold period how high they may go.
#[derive(Debug, Default)]
pub(crate) struct EstimateHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl EstimateHistory {
    pub(crate) fn push(&mut self, bps: u64, now: Instant, hold: Duration) {
        if let Some(start) = now.checked_sub(hold) {
            // Keep the sample in force at the start of the hold period.
            while self.samples.len() >= 2 && self.samples[1].0 <= start {
                self.samples.pop_front();
            }
        }
        if self.samples.len() >= MAX_ESTIMATES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, bps));
    }

    /// The latest estimate.
    pub(crate) fn current(&self) -> Option<u64> {
        self.samples.back().map(|&(_, bps)| bps)
    }

    /// The lowest estimate in force at any time during the last `hold`.
    pub(crate) fn held(&self, now: Instant, hold: Duration) -> Option<u64> {
        let start = now.checked_sub(hold);
        // A sample is in force until the next one arrives.
        let until = self
            .samples
            .iter()
            .skip(1)
            .map(|&(t, _)| Some(t))
            .chain(std::iter::once(None));
        self.samples
            .iter()
            .zip(until)
            .filter(|&(_, until)| match (until, start) {
                (Some(until), Some(start)) => until > start,
                _ => true,
            })
            .map(|(&(_, bps), _)| bps)
            .min()
    }
}

/// One video subscription in a layer allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Demand {
    /// Measured bit/s of each layer the subscription may take, in ascending quality.
    pub(crate) rates: Vec<u64>,
    /// Index of the layer chosen so far (the subscription's target), if among them.
    pub(crate) current: Option<usize>,
    /// The allocation's choice.
    pub(crate) chosen: usize,
}

/// Chooses a layer for each demand (taken in priority order) so that their rates add up to
/// at most a budget: every subscription gets its lowest layer (video is never paused for
/// bandwidth), then each in turn goes up one layer while the total fits, round after round,
/// so the budget is spread rather than spent on the first track. Going up past a demand's
/// current layer must fit `up_budget` (the estimate held for a while), keeping or regaining
/// layers up to the current one only `budget`.
/// Returns the total of the chosen rates.
pub(crate) fn allocate(budget: u64, up_budget: u64, demands: &mut [Demand]) -> u64 {
    let mut used: u64 = 0;
    for d in demands.iter_mut() {
        d.chosen = 0;
        used = used.saturating_add(d.rates.first().copied().unwrap_or(0));
    }
    loop {
        let mut moved = false;
        for d in demands.iter_mut() {
            let next = d.chosen + 1;
            let Some(&rate) = d.rates.get(next) else {
                continue;
            };
            let total = used.saturating_sub(d.rates[d.chosen]).saturating_add(rate);
            let limit = if d.current.is_some_and(|c| next <= c) {
                budget
            } else {
                up_budget.min(budget)
            };
            if total <= limit {
                used = total;
                d.chosen = next;
                moved = true;
            }
        }
        if !moved {
            return used;
        }
    }
}

/// A smoothed audio level (RFC 6464 attenuation: 0 the loudest, 127 silence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LevelMeter {
    smoothed: f32,
    at: Instant,
}

impl LevelMeter {
    pub(crate) fn new(level: u8, now: Instant) -> Self {
        LevelMeter {
            smoothed: f32::from(level.min(127)),
            at: now,
        }
    }

    /// A packet reported `level`: an exponential average with a 300 ms time constant, so a
    /// word counts and a click does not.
    pub(crate) fn update(&mut self, level: u8, now: Instant) {
        let level = f32::from(level.min(127));
        let dt = now.saturating_duration_since(self.at);
        if dt >= LEVEL_STALE {
            self.smoothed = level;
        } else {
            let weight = (dt.as_secs_f32() / LEVEL_SMOOTHING.as_secs_f32()).min(1.0);
            self.smoothed += (level - self.smoothed) * weight;
        }
        self.at = now;
    }

    /// The smoothed level, or `None` when nothing arrived for a second.
    pub(crate) fn level(&self, now: Instant) -> Option<u8> {
        (now.saturating_duration_since(self.at) < LEVEL_STALE)
            .then(|| self.smoothed.round().clamp(0.0, 127.0) as u8)
    }
}

/// Who may become the dominant speaker of a room, and since when.
#[derive(Debug)]
pub(crate) struct Speakers<P> {
    /// The current dominant speaker.
    pub(crate) dominant: Option<P>,
    /// The loudest speaker if it is not the dominant one, and since when it leads.
    challenger: Option<(P, Instant)>,
    last_change: Option<Instant>,
}

impl<P> Default for Speakers<P> {
    fn default() -> Self {
        Speakers {
            dominant: None,
            challenger: None,
            last_change: None,
        }
    }
}

impl<P: Copy + PartialEq> Speakers<P> {
    /// `loudest` is the loudest participant now speaking, if any. Returns the new dominant
    /// speaker when it changes: the loudest must have led for `hold`, and the last change
    /// must be at least `hold` ago. Silence changes nothing (the last speaker stays dominant).
    pub(crate) fn update(&mut self, loudest: Option<P>, now: Instant, hold: Duration) -> Option<P> {
        let Some(p) = loudest.filter(|&p| self.dominant != Some(p)) else {
            self.challenger = None;
            return None;
        };
        let since = match self.challenger {
            Some((c, since)) if c == p => since,
            _ => {
                self.challenger = Some((p, now));
                now
            }
        };
        let led = now.saturating_duration_since(since) >= hold;
        let rested = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= hold);
        if led && rested {
            self.dominant = Some(p);
            self.challenger = None;
            self.last_change = Some(now);
            return Some(p);
        }
        None
    }

    /// `p` left the room: it can no longer be the dominant speaker or lead.
    pub(crate) fn forget(&mut self, p: P) {
        if self.dominant == Some(p) {
            self.dominant = None;
        }
        if self.challenger.is_some_and(|(c, _)| c == p) {
            self.challenger = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn layer_rate_is_measured_and_smoothed() {
        let t0 = Instant::now();
        let mut m = LayerMeter::new(None, t0);
        // 1250 bytes every 10 ms = 1 Mbit/s.
        for i in 0..=50u32 {
            m.record(1250, t0 + MS * (10 * i));
        }
        let bps = m.bps.unwrap();
        assert!((950_000..=1_100_000).contains(&bps), "{bps}");
        assert!(m.flowing(t0 + MS * 600));
        assert!(!m.flowing(t0 + MS * 1600), "idle after a second");

        // Halving the rate moves the average a quarter of the way per window.
        let t1 = t0 + MS * 500;
        for i in 1..=50u32 {
            m.record(625, t1 + MS * (10 * i));
        }
        let lower = m.bps.unwrap();
        assert!(lower < bps && lower > 500_000, "{lower}");
    }

    #[test]
    fn layers_rank_by_size_when_known_else_by_rate() {
        let t0 = Instant::now();
        let layer = |rid: &str, bps: u64, size: Option<(u32, u32)>| LayerMeter {
            bps: Some(bps),
            size,
            ..LayerMeter::new(Some(Rid::from(rid)), t0)
        };
        let meters = vec![
            layer("f", 1_500_000, Some((1280, 720))),
            layer("q", 150_000, Some((320, 180))),
            layer("h", 500_000, Some((640, 360))),
        ];
        let order = |m: &[LayerMeter]| -> Vec<String> {
            rank_layers(m, t0)
                .iter()
                .map(|l| l.rid.unwrap().to_string())
                .collect()
        };
        assert_eq!(order(&meters), ["q", "h", "f"]);
        // A static scene: the big layer costs less than the middle one, sizes still rule.
        let mut cheap = meters.clone();
        cheap[0].bps = Some(400_000);
        assert_eq!(order(&cheap), ["q", "h", "f"]);
        // Unknown sizes: by rate.
        let mut unsized_ = meters.clone();
        unsized_[1].size = None;
        assert_eq!(order(&unsized_), ["q", "h", "f"]);
        unsized_[0].bps = Some(400_000);
        assert_eq!(order(&unsized_), ["q", "f", "h"]);
    }

    #[test]
    fn the_covering_layer_is_the_smallest_at_least_as_big_as_the_tile() {
        let t0 = Instant::now();
        let layer = |size: Option<(u32, u32)>| LayerMeter {
            bps: Some(1),
            size,
            ..LayerMeter::new(None, t0)
        };
        let known = [
            layer(Some((320, 180))),
            layer(Some((640, 360))),
            layer(Some((1280, 720))),
        ];
        let ranked: Vec<&LayerMeter> = known.iter().collect();
        assert_eq!(covering_layer(&ranked, 200, 100), 0);
        assert_eq!(covering_layer(&ranked, 320, 180), 0);
        assert_eq!(covering_layer(&ranked, 321, 100), 1);
        assert_eq!(covering_layer(&ranked, 640, 400), 2);
        assert_eq!(
            covering_layer(&ranked, 4000, 3000),
            2,
            "none covers: the top"
        );

        // Unknown sizes: ¼, ½ and full of the top's (here announced as 960×540).
        let derived = [layer(None), layer(None), layer(Some((960, 540)))];
        let ranked: Vec<&LayerMeter> = derived.iter().collect();
        assert_eq!(covering_layer(&ranked, 240, 135), 0);
        assert_eq!(covering_layer(&ranked, 241, 135), 1);
        assert_eq!(covering_layer(&ranked, 480, 270), 1);
        assert_eq!(covering_layer(&ranked, 481, 270), 2);
        // Nothing announced: the top is taken as 1280×720.
        let unknown = [layer(None), layer(None)];
        let ranked: Vec<&LayerMeter> = unknown.iter().collect();
        assert_eq!(covering_layer(&ranked, 640, 360), 0);
        assert_eq!(covering_layer(&ranked, 641, 360), 1);
    }

    #[test]
    fn vp8_keyframes_announce_their_size() {
        let key = [
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0xff,
        ];
        assert_eq!(vp8_keyframe_size(&key), Some((640, 480)));
        // Scaling bits are not part of the size.
        let scaled = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0xe0, 0xc1];
        assert_eq!(vp8_keyframe_size(&scaled), Some((640, 480)));
        let delta = [0x11, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        assert_eq!(vp8_keyframe_size(&delta), None);
        assert_eq!(vp8_keyframe_size(&key[..9]), None);
        assert_eq!(vp8_keyframe_size(&[0x10, 0, 0, 1, 2, 3, 4, 5, 6, 7]), None);
    }

    #[test]
    fn the_held_estimate_is_the_lowest_of_the_hold_period() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(3);
        let mut e = EstimateHistory::default();
        assert_eq!(e.current(), None);
        assert_eq!(e.held(t0, hold), None);
        e.push(1_000, t0, hold);
        e.push(400, t0 + MS * 1000, hold);
        e.push(2_000, t0 + MS * 2000, hold);
        assert_eq!(e.current(), Some(2_000));
        assert_eq!(e.held(t0 + MS * 2000, hold), Some(400));
        // 400 was in force until t0+2 s: it counts until t0+5 s.
        assert_eq!(e.held(t0 + MS * 4999, hold), Some(400));
        assert_eq!(e.held(t0 + MS * 5000, hold), Some(2_000));
        // Pushing prunes what can no longer count, but never the sample in force.
        e.push(2_100, t0 + MS * 9000, hold);
        assert_eq!(e.held(t0 + MS * 9000, hold), Some(2_000));
        assert_eq!(e.samples.len(), 2);
    }

    fn demand(rates: &[u64], current: Option<usize>) -> Demand {
        Demand {
            rates: rates.to_vec(),
            current,
            chosen: 0,
        }
    }

    #[test]
    fn allocation_spreads_the_budget_and_never_goes_below_the_lowest_layer() {
        let ladder = [100, 300, 1_000];
        let mut ds = [demand(&ladder, None), demand(&ladder, None)];
        assert_eq!(allocate(u64::MAX, u64::MAX, &mut ds), 2_000);
        assert_eq!((ds[0].chosen, ds[1].chosen), (2, 2));

        // 700 fits both on the middle layer, not one on top.
        assert_eq!(allocate(700, 700, &mut ds), 600);
        assert_eq!((ds[0].chosen, ds[1].chosen), (1, 1));

        // 1 300: the first in priority order goes up first.
        assert_eq!(allocate(1_300, 1_300, &mut ds), 1_300);
        assert_eq!((ds[0].chosen, ds[1].chosen), (2, 1));

        // Nothing fits: the lowest layers all the same.
        assert_eq!(allocate(10, 10, &mut ds), 200);
        assert_eq!((ds[0].chosen, ds[1].chosen), (0, 0));
    }

    #[test]
    fn going_up_needs_the_held_budget_keeping_only_the_current_one() {
        let ladder = [100, 300, 1_000];
        // Currently on the middle layer; the estimate is high now but was low recently.
        let mut ds = [demand(&ladder, Some(1))];
        allocate(2_000, 500, &mut ds);
        assert_eq!(ds[0].chosen, 1, "keeps the middle, does not go up yet");
        allocate(2_000, 2_000, &mut ds);
        assert_eq!(ds[0].chosen, 2, "held long enough");
        allocate(200, 200, &mut ds);
        assert_eq!(ds[0].chosen, 0, "down at once");
    }

    #[test]
    fn levels_are_smoothed_and_go_stale() {
        let t0 = Instant::now();
        let mut m = LevelMeter::new(127, t0);
        assert_eq!(m.level(t0), Some(127));
        // Speech at -30 dBov: after 100 ms the average is on its way, after 1 s it is there.
        for i in 1..=5u32 {
            m.update(30, t0 + MS * (20 * i));
        }
        let early = m.level(t0 + MS * 100).unwrap();
        assert!(early > 60 && early < 127, "{early}");
        for i in 6..=50u32 {
            m.update(30, t0 + MS * (20 * i));
        }
        assert!(m.level(t0 + MS * 1000).unwrap() <= 35);
        // One loud packet in silence barely moves it.
        let mut quiet = LevelMeter::new(110, t0);
        quiet.update(0, t0 + MS * 20);
        assert!(quiet.level(t0 + MS * 20).unwrap() > 100);
        assert_eq!(m.level(t0 + MS * 2001), None, "stale");
    }

    #[test]
    fn the_dominant_speaker_must_lead_and_changes_at_most_once_per_hold() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(1);
        let mut s = Speakers::default();
        assert_eq!(s.update(Some(1), t0, hold), None);
        assert_eq!(s.update(Some(1), t0 + MS * 500, hold), None);
        assert_eq!(s.update(Some(1), t0 + MS * 1000, hold), Some(1));
        assert_eq!(s.update(Some(1), t0 + MS * 1250, hold), None, "no repeat");

        // 2 interrupts briefly: nothing. Silence: 1 stays.
        assert_eq!(s.update(Some(2), t0 + MS * 1500, hold), None);
        assert_eq!(s.update(Some(1), t0 + MS * 1750, hold), None);
        assert_eq!(s.update(Some(2), t0 + MS * 2000, hold), None);
        assert_eq!(s.update(None, t0 + MS * 2250, hold), None);
        assert_eq!(s.dominant, Some(1));

        // 2 leads for a second.
        assert_eq!(s.update(Some(2), t0 + MS * 3000, hold), None);
        assert_eq!(s.update(Some(2), t0 + MS * 4000, hold), Some(2));

        s.forget(2);
        assert_eq!(s.dominant, None);
    }
}
