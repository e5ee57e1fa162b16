// @ts-check
/**
 * Local media: camera and microphone with clear error messages and graceful fallback, and
 * screen capture.
 * @module
 */

/**
 * @typedef {'permission-denied' | 'not-found' | 'in-use' | 'insecure-context' | 'aborted'
 *   | 'unknown'} MediaErrorCode
 */

/** A camera/microphone/screen failure with a message meant for the user. */
export class MediaAccessError extends Error {
  /**
   * @param {MediaErrorCode} code
   * @param {string} message
   * @param {unknown} [cause]
   */
  constructor(code, message, cause) {
    super(message);
    this.name = 'MediaAccessError';
    /** @type {MediaErrorCode} */
    this.code = code;
    this.cause = cause;
  }
}

export const MESSAGES = {
  'permission-denied':
    "Camera/microphone permission was denied. Allow access in the browser's address bar and try again.",
  'not-found': 'No camera or microphone found.',
  'in-use': 'The camera is in use by another application.',
  'insecure-context':
    'Camera and microphone need a secure page: open it over HTTPS or on http://localhost.',
  aborted: 'The camera or microphone could not be started.',
  unknown: 'The camera or microphone could not be started.',
};

/**
 * Map a `getUserMedia` failure to a {@link MediaAccessError} with a clear message.
 * @param {unknown} err
 * @returns {MediaAccessError}
 */
export function toMediaError(err) {
  if (err instanceof MediaAccessError) return err;
  const name = err instanceof Error || err instanceof DOMException ? err.name : '';
  switch (name) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return new MediaAccessError('permission-denied', MESSAGES['permission-denied'], err);
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
    case 'ConstraintNotSatisfiedError':
      return new MediaAccessError('not-found', MESSAGES['not-found'], err);
    case 'NotReadableError':
    case 'TrackStartError':
      return new MediaAccessError('in-use', MESSAGES['in-use'], err);
    case 'AbortError':
      return new MediaAccessError('aborted', MESSAGES.aborted, err);
    default: {
      const detail = err instanceof Error && err.message ? ` (${err.message})` : '';
      return new MediaAccessError('unknown', MESSAGES.unknown + detail, err);
    }
  }
}

/**
 * @typedef {object} LocalMedia
 * @property {MediaStream} stream the captured stream
 * @property {boolean} audio whether it holds a microphone track
 * @property {boolean} video whether it holds a camera track
 * @property {string | null} warning set when fewer devices than asked for were obtained,
 *   e.g. audio only because the camera failed; show it to the user
 */

/** Video constraints that suit a call: 720p at most, 30 fps. */
const DEFAULT_VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/**
 * Capture camera and/or microphone.
 *
 * If the camera fails but the microphone works, resolves with an audio-only stream and a
 * `warning`. If nothing can be captured, rejects with a {@link MediaAccessError} whose
 * message explains why (permission denied, no device, device busy); the caller can then
 * join receive-only.
 *
 * @param {{ audio?: boolean | MediaTrackConstraints, video?: boolean | MediaTrackConstraints }} [constraints]
 * @returns {Promise<LocalMedia>}
 */
export async function getLocalMedia({ audio = true, video = true } = {}) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new MediaAccessError('insecure-context', MESSAGES['insecure-context']);
  }
  if (!audio && !video) throw new TypeError('getLocalMedia: ask for audio, video or both');
  const videoConstraints = video === true ? DEFAULT_VIDEO : video;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video: videoConstraints });
    return describe(stream, Boolean(audio), Boolean(video));
  } catch (first) {
    const firstError = toMediaError(first);
    if (video && audio) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
        const result = describe(stream, true, false);
        result.warning = `${cameraProblem(firstError)} Joined with microphone only.`;
        return result;
      } catch {
        // Fall through: report the first (more complete) failure.
      }
    }
    throw firstError;
  }
}

/**
 * @param {MediaAccessError} err
 * @returns {string}
 */
function cameraProblem(err) {
  switch (err.code) {
    case 'permission-denied':
      return 'Camera permission was denied.';
    case 'not-found':
      return 'No camera found.';
    case 'in-use':
      return MESSAGES['in-use'];
    default:
      return 'The camera could not be started.';
  }
}

/**
 * @param {MediaStream} stream
 * @param {boolean} wantedAudio
 * @param {boolean} wantedVideo
 * @returns {LocalMedia}
 */
function describe(stream, wantedAudio, wantedVideo) {
  const hasAudio = stream.getAudioTracks().length > 0;
  const hasVideo = stream.getVideoTracks().length > 0;
  /** @type {string | null} */
  let warning = null;
  if (wantedVideo && !hasVideo) warning = 'No camera found. Joined with microphone only.';
  else if (wantedAudio && !hasAudio) warning = 'No microphone found. Others will not hear you.';
  return { stream, audio: hasAudio, video: hasVideo, warning };
}

/**
 * Capture the screen, a window or a tab. Must be called from a user gesture (a click).
 * @returns {Promise<MediaStream>}
 */
export async function getScreenMedia() {
  if (!navigator.mediaDevices?.getDisplayMedia) {
    throw new MediaAccessError('not-found', 'Screen sharing is not supported by this browser.');
  }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 15, max: 30 } },
      audio: false,
    });
    for (const track of stream.getVideoTracks()) {
      if ('contentHint' in track) track.contentHint = 'detail';
    }
    return stream;
  } catch (err) {
    const name = err instanceof Error || err instanceof DOMException ? err.name : '';
    if (name === 'NotAllowedError' || name === 'AbortError') {
      throw new MediaAccessError('permission-denied', 'Screen sharing was cancelled or not allowed.', err);
    }
    throw new MediaAccessError('unknown', 'Screen sharing could not be started.', err);
  }
}

/**
 * Stop every track of a stream.
 * @param {MediaStream | null | undefined} stream
 */
export function stopStream(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}
