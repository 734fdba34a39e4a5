// The WebSocket to /ws/chat, reconnecting with backoff.
//
// Design note: the page talks to the host and port it was loaded from (`location`), on the
// endpoint the gateway wrote into index.html. A dropped connection (the platform restarted,
// the laptop slept, the network blinked) is retried after 0.5 s, 1 s, 2 s… up to 15 s, with
// ±20 % jitter so that many tabs do not reconnect in lock-step after a restart. Each attempt
// asks for the conversation the page shows (`?conversation_id=`), so a reconnect resumes
// it. The backoff resets once the server's first frame (`session_info`) arrives: a server
// that accepts and then closes at once is still retried slowly.

const BACKOFF_S = [0.5, 1, 2, 4, 8, 15];

/** Connection states shown to the user. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
});

export class ChatConnection {
  /**
   * @param {object} options
   * @param {() => string} options.url Builds the URL for the next attempt.
   * @param {(frame: object) => void} options.onFrame Called with every parsed server frame.
   * @param {(state: string, detail: object) => void} options.onState Connection state changes.
   */
  constructor({ url, onFrame, onState }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.state = null;
  }

  /** Open the connection (and keep it open). */
  start() {
    this.connect();
  }

  /** Retry at once instead of waiting for the backoff timer. */
  retryNow() {
    if (this.state !== State.RECONNECTING) return;
    clearTimeout(this.timer);
    this.connect();
  }

  /**
   * Send one frame.
   * @param {object} frame
   * @returns {boolean} false when not connected (nothing was sent).
   */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== State.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }

  connect() {
    this.timer = null;
    this.setState(State.CONNECTING, { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (error) {
      this.scheduleReconnect(String(error));
      return;
    }
    this.ws = ws;
    let greeted = false;
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        console.error("not a JSON frame", event.data);
        return;
      }
      if (!greeted && frame.type === "session_info") {
        greeted = true;
        this.attempt = 0;
        this.setState(State.OPEN);
      }
      this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleReconnect(event.reason || `closed (code ${event.code})`);
    });
  }

  scheduleReconnect(reason) {
    const base = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)];
    const delay = base * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    const at = Date.now() + delay * 1000;
    this.setState(State.RECONNECTING, { at, reason, attempt: this.attempt });
    this.timer = setTimeout(() => this.connect(), delay * 1000);
  }
}

/**
 * The WebSocket URL for this page: same host and port, ws/wss after the page's scheme.
 * @param {string} endpoint The configured endpoint path (e.g. "/ws/chat").
 * @param {string | null} conversationId The conversation to resume, if any.
 */
export function chatUrl(endpoint, conversationId) {
  const url = new URL(endpoint, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (conversationId) url.searchParams.set("conversation_id", conversationId);
  return url.href;
}
