// The WebSocket client of docs/protocol.md: connect, reconnect, resume. It never touches
// the page: frames go to `handlers`, its condition to `onState`, so it can be loaded and
// driven on its own (tests/browser/test_socket.py). It owns all connection state.

// Protocol 2: joins and leaves come batched, in one `presence` frame per interval.
export const PROTOCOL_VERSION = 2;

const BACKOFF_BASE = 500;
const BACKOFF_CAP = 15000;
const PING_EVERY = 25000;
const PONG_TIMEOUT = 10000;

export const REFUSED = {
  4401: "not_authenticated",
  4403: "forbidden",
  4404: "not_found",
  4409: "name_taken",
  // Too many open sockets for this user or address (or rooms created): retrying at once
  // would only be refused again; the error frame says why.
  4429: "rate_limited",
};

export function socketUrl(room, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${loc.host}/ws/chat/${encodeURIComponent(room)}/?v=${PROTOCOL_VERSION}`;
}

/**
 * A connection to one room; nothing happens until connect().
 *
 * handlers:    {frameType: (frame) => …} for every frame from the server
 * resumePoint: () => {after, private_after?}: where `resume` starts after a reconnect
 * onState:     (state, {reason, due, refused}) with state "connecting", "reconnecting"
 *              (`due`: when the next attempt is, if one is scheduled), "connected" (the
 *              server sent the join history) or "offline" (`reason`: "refused"|"network")
 * onOpen:      () => … once a socket opens
 * onClose:     (code) => … once it is gone, before the next attempt is planned
 */
export function createSocket({
  url,
  handlers = {},
  resumePoint = () => ({ after: 0 }),
  onState = () => {},
  onOpen = () => {},
  onClose = () => {},
  isOnline = () => navigator.onLine,
  random = Math.random,
}) {
  const conn = {
    ws: null,
    state: "idle",
    attempts: 0,
    joined: false, // joined once: every later open is a reconnect that resumes
    retryTimer: null,
    pingTimer: null,
    pongTimer: null,
    refused: false,
    stopped: false,
    // Milliseconds the server asked us to wait before the next attempt: the drain's close
    // reason (1012, "retry_after_ms=…") or an `overloaded` refusal frame's retry_after
    // (1013). A busy server's usual refusal, a 503 with Retry-After before the upgrade, is
    // invisible to a page (the socket just closes, 1006): the backoff below covers it.
    retryAfter: null,
  };

  function setState(state, detail = {}) {
    conn.state = state;
    onState(state, { ...detail, refused: conn.refused });
  }

  function isOpen() {
    return conn.ws !== null && conn.ws.readyState === WebSocket.OPEN;
  }

  function send(frame) {
    if (!isOpen()) return false;
    conn.ws.send(JSON.stringify(frame));
    return true;
  }

  function resumeFrame() {
    return { type: "resume", ...resumePoint() };
  }

  function receive(frame) {
    if (frame.type === "history" && frame.reason === "join") {
      // A real join, not an accept-then-close: the backoff starts over.
      conn.attempts = 0;
      conn.joined = true;
      setState("connected");
    } else if (
      frame.type === "error" &&
      frame.code === "overloaded" &&
      typeof frame.retry_after === "number"
    ) {
      // A server that could not refuse before the upgrade; its 1013 close follows. Whole
      // seconds: up to one more at random, so the refused do not return in step.
      conn.retryAfter = (Math.max(0, frame.retry_after) + random()) * 1000;
      return;
    }
    handlers[frame.type]?.(frame);
    // Page on through what was missed, after the handler has taken this page in.
    if (frame.type === "history" && frame.reason === "resume" && frame.has_more) {
      const list = Array.isArray(frame.messages) ? frame.messages : [];
      if (list.length) send({ type: "resume", after: list[list.length - 1].id });
    } else if (frame.type === "private_history" && frame.has_more) {
      send(resumeFrame());
    }
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    conn.retryAfter = null;
    if (conn.stopped || isOpen() || conn.ws?.readyState === WebSocket.CONNECTING) return;
    setState(conn.joined || conn.attempts > 0 ? "reconnecting" : "connecting");
    const ws = new WebSocket(url);
    conn.ws = ws;
    ws.addEventListener("open", () => {
      if (conn.ws !== ws) return;
      conn.refused = false;
      // "Connected" waits for the join history; a reconnect asks for what it missed.
      if (conn.joined) send(resumeFrame());
      onOpen();
      heartbeat();
    });
    ws.addEventListener("message", (event) => {
      if (conn.ws !== ws) return;
      clearTimeout(conn.pongTimer);
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame.type === "string") receive(frame);
    });
    ws.addEventListener("close", (event) => {
      if (conn.ws !== ws) return;
      const hint = /^retry_after_ms=(\d+)$/.exec(event.reason || "");
      if (hint) conn.retryAfter = Number(hint[1]);
      closed(event.code);
    });
  }

  function closed(code) {
    conn.ws = null;
    clearInterval(conn.pingTimer);
    clearTimeout(conn.pongTimer);
    onClose(code);
    if (conn.stopped) return;
    if (REFUSED[code]) {
      conn.refused = true;
      setState("offline", { reason: "refused" });
      return;
    }
    if (!isOnline()) {
      setState("offline", { reason: "network" });
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    // The server's hint when it gave one (a draining replica spreads its clients' returns;
    // a busy one says when to come back). Otherwise exponential backoff with "full jitter"
    // (anywhere from 0 to the step), so clients that lost the same server do not come back
    // in waves.
    const step = Math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ** conn.attempts);
    const hinted = conn.retryAfter;
    conn.retryAfter = null;
    const delay = hinted !== null ? Math.min(hinted, 4 * BACKOFF_CAP) : random() * step;
    conn.attempts += 1;
    setState("reconnecting", { due: Date.now() + delay });
    conn.retryTimer = setTimeout(connect, delay);
  }

  function heartbeat() {
    clearInterval(conn.pingTimer);
    conn.pingTimer = setInterval(() => {
      if (!send({ type: "ping" })) return;
      clearTimeout(conn.pongTimer);
      conn.pongTimer = setTimeout(() => {
        // No answer at all: the path is dead even if the socket has not noticed yet.
        const ws = conn.ws;
        conn.ws = null;
        try {
          ws?.close();
        } catch {
          /* already closing */
        }
        closed(1006);
      }, PONG_TIMEOUT);
    }, PING_EVERY);
  }

  return {
    connect,
    send,
    isOpen,
    get state() {
      return conn.state;
    },
    /** The user asked: forget the backoff and any refusal. */
    retryNow() {
      conn.attempts = 0;
      conn.refused = false;
      connect();
    },
    /** The network is back (the browser's `online`): no reason to wait. */
    networkUp() {
      if (!conn.ws) {
        conn.attempts = 0;
        connect();
      }
    },
    networkDown() {
      if (!isOpen()) setState("offline", { reason: "network" });
    },
    /** The tab became visible: a scheduled retry need not wait any longer. */
    wake() {
      if (!conn.ws && !conn.refused && conn.state === "reconnecting") connect();
    },
    /** The page is going away (or into the back/forward cache): no more attempts. */
    stop() {
      conn.stopped = true;
    },
    restart() {
      conn.stopped = false;
      connect();
    },
  };
}
