//! Timing of forwarded media, for lip sync: the wallclock each frame is written with, and the
//! RTP timestamps of a subscriber's stream across simulcast layer switches.
//!
//! str0m makes the RTCP sender reports of every stream it sends from the last frame written
//! to it: the report pairs the frame's RTP timestamp, moved on by the time passed since, with
//! the wallclock the frame was written with (`Writer::write`). A browser plays a participant's
//! audio and video in sync by those reports, so the wallclocks of one publisher's frames must
//! be on one clock for all its tracks and as close as possible to when each frame was
//! captured, not to when it happened to arrive (video leaves the encoder later than the audio
//! captured with it, and its packets are paced).
//!
//! [`CaptureClock`] (one per publisher) therefore maps each frame's RTP time through the last
//! sender report of its own stream (NTP ↔ RTP) to the publisher's capture instant, and that
//! instant onto our clock with one offset for all of the publisher's tracks. The offset is the
//! shortest transit seen (so no wallclock is ever later than the frame's arrival, which
//! str0m needs), re-anchored if the mapping falls behind by more than a second (clock drift
//! or a jump of the publisher's clock). Until a stream has had a sender report, its frames
//! use their arrival time.
//!
//! [`OutTimeline`] (one per subscriber m-line) keeps the timestamps continuous when the
//! forwarded simulcast layer changes: each layer is its own RTP stream with its own timestamp
//! base, but the subscriber gets one stream. At a switch, the new layer's timestamps are
//! shifted to follow the old layer's by the wallclock time between the two frames (at least
//! one frame at 30 fps, so the new layer's first frame never repeats a timestamp). It also
//! keeps the wallclocks of an m-line from going back: str0m queues the frames of an m-line in
//! wallclock order, and a frame completed late by a retransmission (whose arrival time is
//! that of the retransmission) must not overtake the frames after it.

use std::time::{Duration, Instant, SystemTime};

use str0m::media::{MediaTime, Rid};
use str0m::rtp::rtcp::SenderInfo;

/// A mapping that lags the arrival by more than this is re-anchored.
const MAX_LAG: Duration = Duration::from_secs(1);
/// The smallest timestamp step at a layer switch: one frame at 30 fps.
const MIN_SWITCH_STEP_PER_SECOND: u32 = 30;

/// One publisher's capture clock, mapped onto ours. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct CaptureClock {
    /// Our instant and the publisher's capture time of the same moment.
    anchor: Option<(Instant, SystemTime)>,
}

impl CaptureClock {
    /// The wallclock to write a frame with: it arrived at `arrival` with RTP time `rtp`, and
    /// `report` is the last sender report of its stream, if any.
    pub(crate) fn wallclock(
        &mut self,
        arrival: Instant,
        rtp: MediaTime,
        report: Option<&SenderInfo>,
    ) -> Instant {
        let Some(capture) = report.and_then(|r| capture_time(rtp, r)) else {
            return arrival;
        };
        if let Some((at, reference)) = self.anchor {
            let mapped = match capture.duration_since(reference) {
                Ok(later) => at.checked_add(later),
                Err(earlier) => at.checked_sub(earlier.duration()),
            };
            if let Some(w) = mapped
                && w <= arrival
                && arrival.duration_since(w) <= MAX_LAG
            {
                return w;
            }
        }
        // The first report, a shorter transit than any before, or a mapping gone stale.
        self.anchor = Some((arrival, capture));
        arrival
    }
}

/// When the publisher captured the frame at `rtp`, by the report's NTP ↔ RTP pair.
fn capture_time(rtp: MediaTime, report: &SenderInfo) -> Option<SystemTime> {
    let rate = u64::from(rtp.denom());
    // 32-bit RTP arithmetic: the report and the frame may be extended differently.
    let ticks = (rtp.numer() as u32).wrapping_sub(report.rtp_time.numer() as u32) as i32;
    let offset = Duration::from_nanos(u64::from(ticks.unsigned_abs()) * 1_000_000_000 / rate);
    if ticks >= 0 {
        report.ntp_time.checked_add(offset)
    } else {
        report.ntp_time.checked_sub(offset)
    }
}

/// The RTP timeline of one m-line the engine sends to a subscriber. See the module
/// documentation.
#[derive(Debug, Default)]
pub(crate) struct OutTimeline {
    /// The layer last written.
    rid: Option<Rid>,
    /// Added to the incoming timestamps (wrapping).
    offset: u32,
    /// The last timestamp written and its wallclock.
    last: Option<(u32, Instant)>,
}

impl OutTimeline {
    /// The RTP time and wallclock to write a frame of layer `rid` with, which arrived with
    /// `rtp` and has the capture `wallclock`.
    pub(crate) fn map(
        &mut self,
        rid: Option<Rid>,
        rtp: MediaTime,
        wallclock: Instant,
    ) -> (MediaTime, Instant) {
        let input = rtp.numer() as u32;
        let wallclock = self.last.map_or(wallclock, |(_, at)| wallclock.max(at));
        if let Some((last, at)) = self.last
            && rid != self.rid
        {
            let rate = rtp.denom();
            let elapsed = wallclock.saturating_duration_since(at);
            let ticks = (elapsed.as_nanos() * u128::from(rate) / 1_000_000_000)
                .min(i32::MAX as u128) as u32;
            let out = last.wrapping_add(ticks.max(rate / MIN_SWITCH_STEP_PER_SECOND));
            self.offset = out.wrapping_sub(input);
        }
        self.rid = rid;
        let out = input.wrapping_add(self.offset);
        self.last = Some((out, wallclock));
        let time = if self.offset == 0 {
            rtp
        } else {
            MediaTime::new(u64::from(out), rtp.frequency())
        };
        (time, wallclock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Frequency;
    use str0m::rtp::Ssrc;

    const MS: Duration = Duration::from_millis(1);

    fn report(rtp: u64, rate: Frequency, ntp: SystemTime) -> SenderInfo {
        SenderInfo {
            ssrc: Ssrc::from(1),
            ntp_time: ntp,
            rtp_time: MediaTime::new(rtp, rate),
            sender_packet_count: 0,
            sender_octet_count: 0,
        }
    }

    #[test]
    fn frames_without_a_report_use_their_arrival() {
        let t0 = Instant::now();
        let mut clock = CaptureClock::default();
        let time = MediaTime::new(1234, Frequency::NINETY_KHZ);
        assert_eq!(clock.wallclock(t0, time, None), t0);
    }

    #[test]
    fn audio_and_video_of_one_publisher_map_to_their_capture_times() {
        // The publisher captured audio and video at the same instants (its NTP clock), with
        // unrelated RTP bases. Video arrives 40 ms after the audio captured with it.
        let t0 = Instant::now();
        let ntp0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let audio_sr = report(5_000, Frequency::FORTY_EIGHT_KHZ, ntp0);
        let video_sr = report(900_000, Frequency::NINETY_KHZ, ntp0);
        let mut clock = CaptureClock::default();
        for i in 0..50u64 {
            // Frame i captured at ntp0 + i·20 ms.
            let audio = MediaTime::new(5_000 + i * 960, Frequency::FORTY_EIGHT_KHZ);
            let video = MediaTime::new(900_000 + i * 1_800, Frequency::NINETY_KHZ);
            let jitter = MS * (i as u32 % 7);
            let a = clock.wallclock(
                t0 + MS * (20 * i as u32 + 10) + jitter,
                audio,
                Some(&audio_sr),
            );
            let v = clock.wallclock(t0 + MS * (20 * i as u32 + 50), video, Some(&video_sr));
            assert_eq!(v, a, "frame {i}: same capture instant, same wallclock");
            assert_eq!(
                a,
                t0 + MS * (20 * i as u32 + 10),
                "the shortest transit is kept"
            );
        }
    }

    #[test]
    fn the_mapping_never_runs_ahead_of_arrival_and_reanchors_when_stale() {
        let t0 = Instant::now();
        let ntp0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sr = report(0, Frequency::NINETY_KHZ, ntp0);
        let mut clock = CaptureClock::default();
        let at = |ms: u64| MediaTime::new(ms * 90, Frequency::NINETY_KHZ);
        assert_eq!(
            clock.wallclock(t0 + MS * 50, at(0), Some(&sr)),
            t0 + MS * 50
        );
        // A frame with a shorter transit moves the anchor: never later than its arrival.
        assert_eq!(
            clock.wallclock(t0 + MS * 120, at(100), Some(&sr)),
            t0 + MS * 120
        );
        assert_eq!(
            clock.wallclock(t0 + MS * 260, at(200), Some(&sr)),
            t0 + MS * 220
        );
        // The publisher's clock jumped back 5 s: re-anchored rather than lagging.
        let jumped = report(0, Frequency::NINETY_KHZ, ntp0 - Duration::from_secs(5));
        assert_eq!(
            clock.wallclock(t0 + MS * 330, at(300), Some(&jumped)),
            t0 + MS * 330
        );
        assert_eq!(
            clock.wallclock(t0 + MS * 440, at(400), Some(&jumped)),
            t0 + MS * 430
        );
        // RTP times before the report map before its NTP time.
        assert_eq!(
            clock.wallclock(
                t0 + MS * 440,
                at(400),
                Some(&report(
                    36_000 + 9_000,
                    Frequency::NINETY_KHZ,
                    ntp0 - Duration::from_secs(5) + MS * 500
                ))
            ),
            t0 + MS * 430
        );
    }

    #[test]
    fn timestamps_continue_across_a_layer_switch() {
        let t0 = Instant::now();
        let h = Some(Rid::from("h"));
        let l = Some(Rid::from("l"));
        let mut line = OutTimeline::default();
        let mut map = |rid, n: u64, at| {
            line.map(rid, MediaTime::new(n, Frequency::NINETY_KHZ), at)
                .0
                .numer()
        };
        // Layer h: passed through unchanged.
        assert_eq!(map(h, 10_000, t0), 10_000);
        assert_eq!(map(h, 13_000, t0 + MS * 33), 13_000);
        // Layer l has another base; its first frame is 67 ms after the last of h.
        let first = map(l, 500_000, t0 + MS * 100);
        assert_eq!(first, 13_000 + 6_030);
        assert_eq!(map(l, 503_000, t0 + MS * 133), first + 3_000);
        // Back to h, captured at the same instant as the last l frame: one frame later.
        let back = map(h, 22_000, t0 + MS * 133);
        assert_eq!(back, first + 3_000 + 3_000);
        assert_eq!(map(h, 25_000, t0 + MS * 166), back + 3_000);
        // Wrapping bases work too.
        let mut wrap = OutTimeline::default();
        let v = |n: u64| MediaTime::new(n, Frequency::NINETY_KHZ);
        wrap.map(h, v(u64::from(u32::MAX - 100)), t0);
        let out = wrap.map(l, v(7), t0 + MS * 10).0.numer();
        assert_eq!(out, u64::from((u32::MAX - 100).wrapping_add(3_000)));
    }

    #[test]
    fn wallclocks_of_an_m_line_never_go_back() {
        let t0 = Instant::now();
        let mut line = OutTimeline::default();
        let v = |n: u64| MediaTime::new(n, Frequency::NINETY_KHZ);
        assert_eq!(line.map(None, v(0), t0 + MS * 50).1, t0 + MS * 50);
        // Completed by a retransmission, then released with the next frame that arrived first.
        assert_eq!(line.map(None, v(3_000), t0 + MS * 90).1, t0 + MS * 90);
        assert_eq!(line.map(None, v(6_000), t0 + MS * 70).1, t0 + MS * 90);
        assert_eq!(line.map(None, v(9_000), t0 + MS * 120).1, t0 + MS * 120);
    }
}
