//! Synthetic media: what publishers send, and how subscribers read it back.
//!
//! Video is VP8-shaped (a real payload header with the keyframe bit, then filler) at a
//! configured bit rate and frame rate; audio is Opus-sized, 20 ms frames. Every frame
//! starts (after the VP8 header) with a [`Stamp`]: a magic number, the publisher's tag, the
//! frame's index and its send time in nanoseconds of `CLOCK_REALTIME`, the clock the kernel
//! stamps received datagrams with. Both servers forward payloads verbatim, so a subscriber
//! learns from the frame itself whose it is, which one it is and how long it took.
//!
//! Nothing here touches a socket or `str0m`'s state: frames are plain bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use str0m::media::MediaKind;

/// Marks a frame written by this tool.
const MAGIC: [u8; 4] = *b"sfuL";
/// Magic, publisher tag, frame index, send time.
const STAMP_LEN: usize = 4 + 4 + 4 + 8;
/// VP8 frame tag with P=0 (keyframe), then the keyframe start code and 640x480.
const VP8_KEY_HEADER: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
/// VP8 frame tag with P=1 (interframe).
const VP8_DELTA_HEADER: [u8; 3] = [0x11, 0x02, 0x00];
/// A keyframe is this many times the size of an interframe.
const KEYFRAME_FACTOR: usize = 3;
/// Opus at 32 kbit/s: 80 bytes every 20 ms.
const AUDIO_BYTES: usize = 80;
/// Opus frame duration.
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// What identifies a frame: whose, which, and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publishing client's tag.
    pub publisher: u32,
    /// Frame number within the publisher's track, from 0.
    pub index: u32,
    /// Send time, nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
    pub sent_ns: u64,
}

/// Frame sizes and intervals of the synthetic streams.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Video frames per second.
    pub fps: u32,
    /// Bytes of an interframe (the bit rate divided by the frame rate).
    pub delta_bytes: usize,
    /// Bytes of a keyframe.
    pub key_bytes: usize,
}

impl Rates {
    pub fn new(video_kbps: u32, fps: u32) -> Rates {
        let delta_bytes = (video_kbps as usize * 1000 / 8 / fps.max(1) as usize).max(STAMP_LEN);
        Rates {
            fps,
            delta_bytes,
            key_bytes: delta_bytes * KEYFRAME_FACTOR,
        }
    }

    pub fn video_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps.max(1)
    }
}

/// Now on the clock frames are stamped with.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One video frame of `rates`' size for its kind.
pub fn video_frame(stamp: Stamp, keyframe: bool, rates: &Rates) -> Vec<u8> {
    let (header, len): (&[u8], usize) = if keyframe {
        (&VP8_KEY_HEADER, rates.key_bytes)
    } else {
        (&VP8_DELTA_HEADER, rates.delta_bytes)
    };
    let mut frame = Vec::with_capacity(header.len() + len);
    frame.extend_from_slice(header);
    put_stamp(&mut frame, stamp, len);
    frame
}

/// One Opus-sized audio frame.
pub fn audio_frame(stamp: Stamp) -> Vec<u8> {
    let mut frame = Vec::with_capacity(AUDIO_BYTES);
    put_stamp(&mut frame, stamp, AUDIO_BYTES);
    frame
}

/// Appends the stamp and filler up to `len` bytes after the header.
fn put_stamp(frame: &mut Vec<u8>, stamp: Stamp, len: usize) {
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&stamp.publisher.to_be_bytes());
    frame.extend_from_slice(&stamp.index.to_be_bytes());
    frame.extend_from_slice(&stamp.sent_ns.to_be_bytes());
    let filler = len.saturating_sub(STAMP_LEN);
    frame.extend((0..filler).map(|i| i as u8));
}

/// The stamp of a received frame, if it is one of ours and whole.
pub fn read_stamp(kind: MediaKind, data: &[u8]) -> Option<Stamp> {
    let body = match kind {
        MediaKind::Audio => data,
        // The P bit of the VP8 frame tag: 0 is a keyframe, with the longer header.
        MediaKind::Video if data.first()? & 1 == 0 => data.get(VP8_KEY_HEADER.len()..)?,
        MediaKind::Video => data.get(VP8_DELTA_HEADER.len()..)?,
    };
    let stamp = body.get(..STAMP_LEN)?;
    if stamp[..4] != MAGIC {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(stamp[at..at + 4].try_into().expect("4 bytes"));
    Some(Stamp {
        publisher: word(4),
        index: word(8),
        sent_ns: u64::from_be_bytes(stamp[12..20].try_into().expect("8 bytes")),
    })
}

/// Whether a datagram is RTP (not RTCP, STUN or DTLS), by RFC 7983 and RFC 5761: a first
/// byte of 128–191 is RTP or RTCP, and RTCP's packet types put 192–223 in the second byte.
/// The header is not encrypted, so this works on SRTP as sent and received.
pub fn is_rtp(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, ..] if datagram.len() >= 12 => {
            (128..=191).contains(first) && !(192..=223).contains(second)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_both_kinds() {
        let rates = Rates::new(1500, 30);
        assert_eq!(rates.delta_bytes, 6250);
        let stamp = Stamp {
            publisher: 7,
            index: 42,
            sent_ns: 1_700_000_000_123_456_789,
        };
        for key in [true, false] {
            let frame = video_frame(stamp, key, &rates);
            assert_eq!(read_stamp(MediaKind::Video, &frame), Some(stamp));
        }
        assert_eq!(
            video_frame(stamp, true, &rates).len(),
            VP8_KEY_HEADER.len() + 3 * 6250
        );
        let audio = audio_frame(stamp);
        assert_eq!(audio.len(), AUDIO_BYTES);
        assert_eq!(read_stamp(MediaKind::Audio, &audio), Some(stamp));
        assert_eq!(read_stamp(MediaKind::Audio, &audio[..10]), None);
        assert_eq!(read_stamp(MediaKind::Audio, &[0u8; 40]), None);
    }

    #[test]
    fn tells_rtp_from_rtcp_and_the_rest() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp(&rtp));
        rtp[1] = 96 | 0x80; // marker bit
        assert!(is_rtp(&rtp));
        rtp[1] = 200; // sender report
        assert!(!is_rtp(&rtp));
        assert!(!is_rtp(&[0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // STUN
        assert!(!is_rtp(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // DTLS
    }
}
