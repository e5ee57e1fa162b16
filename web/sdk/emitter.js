// @ts-check
/**
 * A tiny typed event emitter. Every SDK object that reports events extends it; the event
 * names and payloads are listed in each class's `EventMap` typedef.
 * @module
 */

/**
 * @template {Record<string, any>} EventMap event name → payload type
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof EventMap, Set<(detail: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * Listen to an event. Returns a function that removes the listener.
   * @template {keyof EventMap & string} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) {
      set = new Set();
      this._listeners.set(type, set);
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Listen to the next occurrence of an event only.
   * @template {keyof EventMap & string} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} listener
   * @returns {() => void}
   */
  once(type, listener) {
    /** @param {EventMap[K]} detail */
    const wrapper = (detail) => {
      this.off(type, wrapper);
      listener(detail);
    };
    return this.on(type, wrapper);
  }

  /**
   * @template {keyof EventMap & string} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} listener
   */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * Call every listener of `type`. A throwing listener is reported and does not stop the
   * others.
   * @template {keyof EventMap & string} K
   * @param {K} type
   * @param {EventMap[K]} detail
   */
  emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(detail);
      } catch (err) {
        console.error(`switchboard: "${type}" listener failed`, err);
      }
    }
  }

  /** Remove every listener. */
  removeAllListeners() {
    this._listeners.clear();
  }
}
