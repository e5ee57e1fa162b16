// @ts-check
/**
 * Connection statistics: turns one `RTCPeerConnection.getStats()` report (plus the
 * previous sample, for rates) into a flat summary, and formats it for people.
 * Works with Chromium's and Firefox's reports. A connection to the SFU carries the video
 * of several participants; {@link summarizeStreams} splits its decoding counters by
 * remote stream.
 * @module
 */

/**
 * @typedef {'host' | 'srflx' | 'prflx' | 'relay'} CandidateType
 */

/**
 * One peer connection's numbers at one moment.
 * @typedef {object} PeerStats
 * @property {string} peerId
 * @property {string} name
 * @property {number} bitrateIn received media and data, bits/s since the previous call
 *   (0 on the first call)
 * @property {number} bitrateOut sent media and data, bits/s since the previous call
 * @property {number} bytesReceived cumulative media (RTP payload) and data-channel bytes received
 * @property {number} bytesSent cumulative media and data-channel bytes sent
 * @property {number} packetsReceived cumulative RTP packets received
 * @property {number} packetsLost cumulative RTP packets lost on the way to us
 * @property {number} lossPercent loss of incoming packets in % since the previous call (or
 *   overall when nothing arrived in between)
 * @property {number | null} fractionLost fraction (0–1) of our outgoing packets the remote
 *   side reports lost, when known
 * @property {number | null} rtt round-trip time in ms, when known
 * @property {number | null} jitter incoming jitter in ms (worst stream), when known
 * @property {number} framesDecoded cumulative video frames decoded
 * @property {number | null} framesPerSecond decoded video frames per second
 * @property {number} framesSent cumulative video frames sent
 * @property {string | null} codec incoming video codec mime type (e.g. `video/VP8`), else the
 *   outgoing one, else audio
 * @property {{ local: CandidateType | null, remote: CandidateType | null }} candidateType
 *   candidate types of the selected ICE candidate pair
 * @property {string} connectionState `RTCPeerConnection.connectionState`
 * @property {number} timestamp Unix milliseconds of the counters (the report's timestamp)
 * @property {StreamStats[]} [streams] the connection to the SFU only: every remote stream
 *   it receives
 */

/**
 * Video decoding of one remote stream.
 * @typedef {object} StreamStats
 * @property {string} peerId whose stream
 * @property {string} name their display name
 * @property {import('./types.js').StreamKind} kind
 * @property {number} framesDecoded cumulative video frames decoded
 * @property {number | null} framesPerSecond decoded frames per second, when known
 */

/**
 * Raw counters kept between calls to compute rates.
 * @typedef {object} StatsSample
 * @property {number} time the report's timestamp (ms)
 * @property {number} bitrateIn the rates computed at this sample, reused when the next call
 *   comes too soon after it to measure anything
 * @property {number} bitrateOut
 * @property {number} lossPercent
 * @property {number} bytesReceived
 * @property {number} bytesSent
 * @property {number} packetsReceived
 * @property {number} packetsLost
 * @property {number} framesDecoded
 */

/**
 * Summarize one report.
 * @param {RTCStatsReport} report
 * @param {StatsSample | null} prev the sample returned by the previous call, or null
 * @param {{ peerId: string, name: string, connectionState: string }} who
 * @returns {{ stats: PeerStats, sample: StatsSample }}
 */
export function summarizeStats(report, prev, who) {
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));

  let bytesReceived = 0;
  let bytesSent = 0;
  let packetsReceived = 0;
  let packetsLost = 0;
  let framesDecoded = 0;
  let framesSent = 0;
  /** @type {number | null} */
  let fps = null;
  /** @type {number | null} */
  let jitter = null;
  /** @type {number | null} */
  let remoteRtt = null;
  /** @type {number | null} */
  let fractionLost = null;
  /** @type {string | null} */
  let inVideoCodec = null;
  /** @type {string | null} */
  let outVideoCodec = null;
  /** @type {string | null} */
  let audioCodec = null;
  /** @type {any} */
  let transport = null;
  /** @type {any[]} */
  const pairs = [];

  let reportTime = 0;
  for (const s of byId.values()) {
    if (typeof s.timestamp === 'number' && s.timestamp > reportTime) reportTime = s.timestamp;
    const kind = s.kind ?? s.mediaType;
    switch (s.type) {
      case 'inbound-rtp':
        if (s.isRemote) break; // old Firefox put remote stats here
        bytesReceived += s.bytesReceived ?? 0;
        packetsReceived += s.packetsReceived ?? 0;
        packetsLost += Math.max(0, s.packetsLost ?? 0);
        if (typeof s.jitter === 'number') jitter = Math.max(jitter ?? 0, s.jitter * 1000);
        if (kind === 'video') {
          framesDecoded += s.framesDecoded ?? 0;
          if (typeof s.framesPerSecond === 'number') fps = (fps ?? 0) + s.framesPerSecond;
          if (!inVideoCodec && s.codecId) inVideoCodec = s.codecId;
        } else if (!audioCodec && s.codecId) {
          audioCodec = s.codecId;
        }
        break;
      case 'outbound-rtp':
        if (s.isRemote) break;
        bytesSent += s.bytesSent ?? 0;
        if (kind === 'video') {
          framesSent += s.framesSent ?? s.framesEncoded ?? 0;
          if (!outVideoCodec && s.codecId) outVideoCodec = s.codecId;
        } else if (!audioCodec && s.codecId) {
          audioCodec = s.codecId;
        }
        break;
      case 'remote-inbound-rtp':
        if (typeof s.roundTripTime === 'number') remoteRtt = s.roundTripTime * 1000;
        if (typeof s.fractionLost === 'number') {
          fractionLost = Math.max(fractionLost ?? 0, s.fractionLost);
        }
        break;
      case 'data-channel':
        bytesReceived += s.bytesReceived ?? 0;
        bytesSent += s.bytesSent ?? 0;
        break;
      case 'transport':
        if (!transport || s.selectedCandidatePairId) transport = s;
        break;
      case 'candidate-pair':
        pairs.push(s);
        break;
      default:
        break;
    }
  }

  const pair =
    (transport?.selectedCandidatePairId && byId.get(transport.selectedCandidatePairId)) ||
    pairs.find((p) => p.selected) ||
    pairs.find((p) => p.nominated && p.state === 'succeeded') ||
    pairs.find((p) => p.state === 'succeeded') ||
    null;
  /** @type {number | null} */
  let rtt = null;
  if (pair && typeof pair.currentRoundTripTime === 'number') rtt = pair.currentRoundTripTime * 1000;
  else if (pair && pair.responsesReceived > 0 && typeof pair.totalRoundTripTime === 'number') {
    rtt = (pair.totalRoundTripTime / pair.responsesReceived) * 1000;
  } else rtt = remoteRtt;

  const local = pair ? byId.get(pair.localCandidateId)?.candidateType ?? null : null;
  const remote = pair ? byId.get(pair.remoteCandidateId)?.candidateType ?? null : null;

  const codecId = inVideoCodec ?? outVideoCodec ?? audioCodec;
  const codec = codecId ? byId.get(codecId)?.mimeType ?? null : null;

  const time = reportTime || Date.now();
  let bitrateIn = 0;
  let bitrateOut = 0;
  let lossPercent = 0;
  // Browsers refresh some counters only every few hundred ms: a call right after the
  // previous one reuses its rates instead of reporting zero.
  const tooSoon = prev !== null && time - prev.time < 250;
  if (prev && tooSoon) {
    bitrateIn = prev.bitrateIn;
    bitrateOut = prev.bitrateOut;
    lossPercent = prev.lossPercent;
  } else if (prev && time > prev.time) {
    const seconds = (time - prev.time) / 1000;
    bitrateIn = Math.max(0, ((bytesReceived - prev.bytesReceived) * 8) / seconds);
    bitrateOut = Math.max(0, ((bytesSent - prev.bytesSent) * 8) / seconds);
    const dLost = Math.max(0, packetsLost - prev.packetsLost);
    const dRecv = Math.max(0, packetsReceived - prev.packetsReceived);
    if (dLost + dRecv > 0) lossPercent = (dLost * 100) / (dLost + dRecv);
    else if (packetsLost + packetsReceived > 0) {
      lossPercent = (packetsLost * 100) / (packetsLost + packetsReceived);
    }
    if (fps === null && framesDecoded > prev.framesDecoded) {
      fps = (framesDecoded - prev.framesDecoded) / seconds;
    }
  } else if (packetsLost + packetsReceived > 0) {
    lossPercent = (packetsLost * 100) / (packetsLost + packetsReceived);
  }

  return {
    stats: {
      peerId: who.peerId,
      name: who.name,
      bitrateIn,
      bitrateOut,
      bytesReceived,
      bytesSent,
      packetsReceived,
      packetsLost,
      lossPercent,
      fractionLost,
      rtt,
      jitter,
      framesDecoded,
      framesPerSecond: fps,
      framesSent,
      codec,
      candidateType: { local, remote },
      connectionState: who.connectionState,
      timestamp: time,
    },
    sample:
      prev && tooSoon
        ? prev
        : { time, bytesReceived, bytesSent, packetsReceived, packetsLost, framesDecoded, bitrateIn, bitrateOut, lossPercent },
  };
}

/**
 * Video frames decoded per remote track, from the `inbound-rtp` entries of one report.
 * Tracks are recognised by `trackIdentifier`, or else by the `mid` of their transceiver.
 * @param {RTCStatsReport} report
 * @param {Map<string, string>} trackOfMid receiving track id by transceiver `mid`
 * @returns {Map<string, { framesDecoded: number, framesPerSecond: number | null }>} by track id
 */
export function summarizeStreams(report, trackOfMid) {
  /** @type {Map<string, { framesDecoded: number, framesPerSecond: number | null }>} */
  const byTrack = new Map();
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.isRemote || (s.kind ?? s.mediaType) !== 'video') return;
    const track = s.trackIdentifier ?? (typeof s.mid === 'string' ? trackOfMid.get(s.mid) : undefined);
    if (!track) return;
    // A track may have had several SSRCs (the server switched simulcast layers): add up.
    const entry = byTrack.get(track) ?? { framesDecoded: 0, framesPerSecond: null };
    entry.framesDecoded += s.framesDecoded ?? 0;
    if (typeof s.framesPerSecond === 'number') entry.framesPerSecond = (entry.framesPerSecond ?? 0) + s.framesPerSecond;
    byTrack.set(track, entry);
  });
  return byTrack;
}

/**
 * `1.2 Mbit/s`, `900 kbit/s`, `0 bit/s`.
 * @param {number} bitsPerSecond
 * @returns {string}
 */
export function formatBitrate(bitsPerSecond) {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(1)} Mbit/s`;
  if (bitsPerSecond >= 1e3) return `${Math.round(bitsPerSecond / 1e3)} kbit/s`;
  return `${Math.round(bitsPerSecond)} bit/s`;
}

/**
 * One line for people, e.g.
 * `↓ 1.2 Mbit/s ↑ 900 kbit/s, loss 0.1%, RTT 12 ms, jitter 3 ms, 1234 frames, VP8, host↔host`.
 * @param {PeerStats} s
 * @returns {string}
 */
export function formatPeerStats(s) {
  const ms = (/** @type {number | null} */ v) => (v === null ? '–' : `${Math.round(v)} ms`);
  const codec = s.codec ? s.codec.replace(/^[a-z]+\//i, '') : '–';
  const path = `${s.candidateType.local ?? '?'}↔${s.candidateType.remote ?? '?'}`;
  const loss = s.lossPercent < 10 ? s.lossPercent.toFixed(1) : Math.round(s.lossPercent).toString();
  return (
    `↓ ${formatBitrate(s.bitrateIn)} ↑ ${formatBitrate(s.bitrateOut)}, loss ${loss}%, ` +
    `RTT ${ms(s.rtt)}, jitter ${ms(s.jitter)}, ${s.framesDecoded} frames, ${codec}, ${path}`
  );
}

/**
 * One line for people about a remote stream, e.g. `Bob: 1234 frames, 30 fps` (`Bob's
 * screen: …` for a screen share).
 * @param {StreamStats} s
 * @returns {string}
 */
export function formatStreamStats(s) {
  const who = s.kind === 'screen' ? `${s.name}’s screen` : s.name;
  const fps = s.framesPerSecond === null ? '' : `, ${Math.round(s.framesPerSecond)} fps`;
  return `${who}: ${s.framesDecoded} frames${fps}`;
}
