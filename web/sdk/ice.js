// @ts-check
/**
 * ICE server configuration from the server (`GET /api/ice-servers`): STUN and, when
 * configured, TURN with short-lived credentials.
 * @module
 */

/**
 * Fetch the `iceServers` array for `RTCPeerConnection`. Never throws: on any failure it
 * returns `[]` (host candidates still work on a LAN).
 * @param {string} [url]
 * @returns {Promise<RTCIceServer[]>}
 */
export async function fetchIceServers(url = '/api/ice-servers') {
  try {
    const res = await fetch(url, { cache: 'no-store' });
    if (!res.ok) return [];
    const body = await res.json();
    return Array.isArray(body?.iceServers) ? sanitizeIceServers(body.iceServers) : [];
  } catch {
    return [];
  }
}

/**
 * Drop ICE server URLs browsers refuse, so that one bad entry cannot make
 * `new RTCPeerConnection()` throw: STUN URLs take no query (`?transport=` is for TURN
 * only, RFC 7064/7065), and only `stun:`, `stuns:`, `turn:` and `turns:` schemes exist.
 * Servers left without URLs are removed.
 * @param {RTCIceServer[]} servers
 * @returns {RTCIceServer[]}
 */
export function sanitizeIceServers(servers) {
  /** @type {RTCIceServer[]} */
  const out = [];
  for (const server of servers) {
    if (!server || typeof server !== 'object') continue;
    const list = Array.isArray(server.urls) ? server.urls : [server.urls];
    const urls = list.filter(
      (url) =>
        typeof url === 'string' &&
        (/^turns?:[^?]+(\?transport=(udp|tcp))?$/i.test(url) || /^stuns?:[^?]+$/i.test(url)),
    );
    if (urls.length) out.push({ ...server, urls });
  }
  return out;
}
