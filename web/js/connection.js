// The WebSocket to /ws/chat, reconnecting with backoff.
//
// Design note: the page talks to the host and port it was loaded from (`location`), on the
// endpoint the gateway wrote into index.html. A dropped connection (the platform restarted,
// the laptop slept, the network blinked) is retried after 0.5 s, 1 s, 2 s… up to 15 s, with
// ±20 % jitter so that many tabs do not reconnect in lock-step after a restart. Each attempt
// asks for the conversation the page shows (`?conversation_id=`), so a reconnect resumes
// it. The backoff resets once the server's first frame (`session_info`) arrives: a server
// that accepts and then closes at once is still retried slowly.
//
// Authentication: a browser cannot set headers on a WebSocket, so the token travels as
// `?token=`. The page takes it from its own address (`/?token=…` or `/#token=…`), keeps it
// in sessionStorage (this tab only) and removes it from the address bar, so it is not
// bookmarked, shared or kept in the history. A refused handshake (HTTP 401) looks to the
// page like any failed connection, so after a connection that failed before its first
// frame the page asks the endpoint once with a plain `fetch` (the token in an
// Authorization header): a 401 there means the token is the problem, and the page stops
// retrying and says so instead of reconnecting forever. One probe per failed attempt, on
// the same backoff: never a busy loop.

const BACKOFF_S = [0.5, 1, 2, 4, 8, 15];

/** Connection states shown to the user. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  UNAUTHORIZED: "unauthorized",
});

const TOKEN_KEY = "mcp-platform-token";

/**
 * The page's token: taken from `?token=` or `#token=` (then removed from the address bar
 * and kept in sessionStorage), else the one kept earlier in this tab; null when none.
 * @returns {string | null}
 */
export function pageToken() {
  const url = new URL(location.href);
  const hash = new URLSearchParams(url.hash.startsWith("#") ? url.hash.slice(1) : url.hash);
  const given = url.searchParams.get("token") || hash.get("token");
  if (given) {
    try {
      sessionStorage.setItem(TOKEN_KEY, given);
    } catch {
      // Storage disabled: the token still works for this page load.
    }
    url.searchParams.delete("token");
    hash.delete("token");
    const rest = hash.toString();
    url.hash = rest ? `#${rest}` : "";
    history.replaceState(history.state, "", url.href);
    return given;
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export class ChatConnection {
  /**
   * @param {object} options
   * @param {() => string} options.url Builds the URL for the next attempt.
   * @param {(frame: object) => void} options.onFrame Called with every parsed server frame.
   * @param {(state: string, detail: object) => void} options.onState Connection state changes.
   * @param {() => Promise<boolean>} [options.refused] After a connection that failed before
   *   its first frame: resolves true when the server refuses our credentials (no retry then).
   */
  constructor({ url, onFrame, onState, refused }) {
    this.url = url;
    this.refused = refused || (async () => false);
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
    ws.addEventListener("close", async (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const reason = event.reason || `closed (code ${event.code})`;
      // Refused at the handshake, or closed for a revoked token (1008): is it the token?
      if (!greeted || event.code === 1008) {
        let refused = false;
        try {
          refused = await this.refused();
        } catch {
          refused = false; // the server is unreachable: an ordinary reconnect
        }
        if (refused) {
          this.setState(State.UNAUTHORIZED, { reason });
          return;
        }
      }
      this.scheduleReconnect(reason);
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
 * @param {string | null} [token] The page's token (see pageToken), sent as `?token=`.
 */
export function chatUrl(endpoint, conversationId, token = null) {
  const url = new URL(endpoint, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (conversationId) url.searchParams.set("conversation_id", conversationId);
  if (token) url.searchParams.set("token", token);
  return url.href;
}

/**
 * Whether the endpoint refuses this token (HTTP 401 to a plain GET, which the gateway
 * checks before the upgrade), asked without putting the token in a URL. A 429 means the
 * same: the gateway lets a valid token through even from a throttled address, so only
 * a wrong one is told to wait, and waiting would not make it right.
 * @param {string} endpoint The configured endpoint path.
 * @param {string | null} token The page's token.
 * @returns {Promise<boolean>}
 */
export async function tokenRefused(endpoint, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(new URL(endpoint, location.href), { headers, cache: "no-store" });
  return response.status === 401 || response.status === 429;
}
