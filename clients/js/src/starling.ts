import { Emitter } from "./emitter.js";
import { ErrorCodes, StarlingError } from "./errors.js";
import * as wire from "./protocol.js";
import type { Message, NotificationMessage, PeerRef, RequestMessage, ResponseMessage, StreamPosition, Welcome } from "./protocol.js";
import { frameText, resolveWebSocket } from "./transport.js";
import { StreamTable } from "./streams.js";
import type { IncomingStream, StreamWriter } from "./streams.js";
import type { StreamInfo } from "./streams.js";
import type { SocketLike, WebSocketConstructor } from "./transport.js";

/** Options of {@link Starling}. Every field is optional. */
export interface StarlingOptions {
  /** Reconnect automatically after an unexpected disconnection. Default `true`. */
  reconnect?: boolean;
  /** First reconnection delay in ms, doubled at each failed attempt. Default `250`. */
  reconnectDelay?: number;
  /** Ceiling of the reconnection delay in ms. Default `10000`. */
  maxReconnectDelay?: number;
  /** Give up after this many failed attempts in a row. Default `Infinity`. */
  maxReconnectAttempts?: number;
  /** Default timeout of `request()` in ms. Default `30000`. */
  requestTimeout?: number;
  /** How long one connection attempt may take, welcome included, in ms. Default `10000`. */
  connectTimeout?: number;
  /**
   * Keep a recovery token (`starling:getToken`) and recover the session on
   * reconnection. Default `true`; silently off when the server has no
   * recovery secret.
   */
  recovery?: boolean;
  /** Send `system:ping` this often (ms) to detect a dead link; `0` disables. Default `25000`. */
  heartbeatInterval?: number;
  /** A heartbeat unanswered for this long (ms) drops the socket. Default `10000`. */
  heartbeatTimeout?: number;
  /** Most messages kept while reconnecting. Default `1000`. */
  maxQueue?: number;
  /**
   * A recovery token kept from an earlier connection (for instance in
   * `sessionStorage` across a page reload): the first connection tries to
   * recover that session.
   */
  recoveryToken?: string;
  /**
   * First wait (ms) before retrying a recovery the server refused because the
   * old connection is still live (it has not noticed the drop yet); doubled
   * per retry up to 2 s. Retries stop when the recovery token expires, then a
   * fresh session starts. Default `100`.
   */
  recoveryRetryDelay?: number;
  /** A WebSocket constructor to use instead of the global one or `ws`. */
  WebSocket?: WebSocketConstructor;
}

/** Options of {@link Starling.request}. */
export interface RequestOptions {
  /** Milliseconds before the request fails with `REQUEST_TIMEOUT`. */
  timeout?: number;
  /** Aborting it cancels the request (`REQUEST_CANCELLED`). */
  signal?: AbortSignal;
  /** Relay the request to another connection through the server. */
  peer?: PeerRef;
}

/** Options of {@link Starling.notify}. */
export interface NotifyOptions {
  /** Relay the notification to another connection through the server. */
  peer?: PeerRef;
}

/** Options of {@link Starling.notifyReliable}. */
export interface ReliableOptions extends NotifyOptions {
  /** Resends after the first send when no acknowledgement comes. Default `5`. */
  retries?: number;
  /** Wait (ms) after the first send before resending, doubled per resend. Default `500`. */
  delay?: number;
  /** Longest wait between two sends (ms). Default `8000`. */
  maxDelay?: number;
}

/** What a method handler receives besides the payload. */
export interface MethodContext {
  /** The request's id. */
  requestId: string;
  /** The method called. */
  method: string;
  /** The caller, when the server relayed the request from a peer. */
  peer?: PeerRef;
  /** Aborts when the caller cancels, the request times out, or the socket closes. */
  signal: AbortSignal;
}

/** Answers requests for one method; the return value (or its promise) is the response data. */
export type MethodHandler = (payload: unknown, ctx: MethodContext) => unknown;

/** A delivery on a subscribed topic, or any other notification. */
export interface NotificationEvent {
  topic?: string;
  data: unknown;
  /** The sender, for a notification relayed from a peer. */
  peer?: PeerRef;
  offset?: number;
  epoch?: string;
  ackId?: string;
}

/** Receives deliveries on a subscribed topic. */
export type TopicHandler = (data: unknown, meta: NotificationEvent) => void;

/** Argument of the `connected` event. */
export interface ConnectedEvent {
  starlingId: string;
  /** The server restored the previous session. */
  recovered: boolean;
  /** This connection replaces an earlier one of the same client. */
  reconnect: boolean;
  /** Why a recovery that was tried was refused (the welcome's `reason`). */
  reason?: string;
  /** The whole welcome data. */
  welcome: Welcome;
}

/** Argument of the `disconnected` event. */
export interface DisconnectedEvent {
  code: number;
  reason: string;
  /** A reconnection is scheduled. */
  willReconnect: boolean;
}

/** Argument of the `recovered` event. */
export interface RecoveredEvent {
  starlingId: string;
  /** Topics kept across the reconnection. */
  topics: string[];
  /**
   * `true` when some room's history no longer covered the time away: the
   * messages of `missedRooms` were not all replayed (never a silent hole).
   */
  missed: boolean;
  /** The rooms with a gap (see `missed`). */
  missedRooms: string[];
  /** The rooms the server put the session back in. */
  rooms: string[];
}

/** The events of {@link Starling} and the argument of each. */
export interface StarlingEvents extends Record<string, unknown> {
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  recovered: RecoveredEvent;
  notification: NotificationEvent;
  error: Error;
}

/** Connection states. */
export type StarlingState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

interface Pending {
  resolve(data: unknown): void;
  reject(err: StarlingError): void;
  /** Set once the request went out on a socket. */
  sent: boolean;
  cleanup(): void;
}

interface Incoming {
  controller: AbortController;
  done: boolean;
  peer?: PeerRef;
  timer?: ReturnType<typeof setTimeout>;
}

/** A reliable notification waiting for its `helios:ack`. */
interface Unacked {
  msg: NotificationMessage;
  sends: number;
  retries: number;
  delay: number;
  maxDelay: number;
  /** Not sent for want of a connection: sent at the next welcome. */
  waiting: boolean;
  timer?: ReturnType<typeof setTimeout>;
  resolve(): void;
  reject(err: StarlingError): void;
}

/** A bounded set of recently seen ids (oldest forgotten first). */
class RecentIds {
  private readonly ids = new Set<string>();
  constructor(private readonly cap: number) {}
  /** `true` the first time `id` is seen. */
  firstTime(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.cap) {
      const oldest = this.ids.values().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
    return true;
  }
  clear(): void {
    this.ids.clear();
  }
}

/** The session was still held by the old connection; the attempt is retried. */
class SessionHeld extends Error {}

/** Close codes after which the client does not reconnect on its own. */
function closeForbidsRetry(code: number): boolean {
  // 4008 (slow consumer) lies in the 4000–4099 "do not retry as is" range,
  // but the protocol's table says to reconnect with recovery after it.
  if (code === 4008) return false;
  // 4000–4099: "do not retry as is"; 4101: the session was taken over elsewhere.
  return (code >= 4000 && code <= 4099) || code === 4101;
}

/**
 * The error listener of a socket being let go. Closing a socket whose
 * handshake is still running makes the `ws` package emit "WebSocket was
 * closed before the connection was established"; with no listener, Node
 * turns that into an uncaught exception.
 */
const ignoreError = (): void => {};

/** The error reported for a close that stops reconnection. */
function closeError(code: number, reason: string): StarlingError {
  const byCode: Record<number, string> = {
    4001: ErrorCodes.UNAUTHORIZED,
    4003: ErrorCodes.FORBIDDEN,
    4029: ErrorCodes.RATE_LIMITED,
  };
  return new StarlingError(
    byCode[code] ?? ErrorCodes.CONNECTION_CLOSED,
    `the server closed the connection with ${code}${reason ? ` (${reason})` : ""}; not reconnecting`,
    { closeCode: code, reason },
  );
}

/** The `exp` claim of a JWT, in ms since the epoch; `Infinity` when unreadable. */
function jwtExpiry(token: string): number {
  try {
    const part = token.split(".")[1];
    if (!part) return Infinity;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const json = JSON.parse(atob(b64)) as { exp?: unknown };
    return typeof json.exp === "number" ? json.exp * 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

const ACK_WINDOW = 1024;
const ANSWERED_KEPT = 256;

/** Recently seen offsets of one topic, to drop duplicate deliveries. */
interface Seen {
  epoch: string;
  offsets: Set<number>;
  order: number[];
  /** Every offset at or below this one was seen (or is too old to tell). */
  floor: number;
}

const SEEN_WINDOW = 4096;
const RESERVED_NAMESPACES = ["system", "internal", "stream", "helios"];

/**
 * A connection to a Helios server.
 *
 * ```ts
 * const client = new Starling("ws://127.0.0.1:7700/ws");
 * await client.connect();
 * const pong = await client.request("system:ping", {});
 * ```
 */
export class Starling extends Emitter<StarlingEvents> {
  /** The server URL (without the `recover` parameter). */
  readonly url: string;
  private readonly opts: Required<Omit<StarlingOptions, "WebSocket" | "recoveryToken">> & { WebSocket?: WebSocketConstructor };

  private _state: StarlingState = "idle";
  private _starlingId: string | null = null;
  private socket: SocketLike | null = null;
  private connecting: Promise<Welcome> | null = null;
  private everConnected = false;
  private attempts = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;

  private readonly pending = new Map<string, Pending>();
  /** The credential from the last `refreshAuth`, used for reconnections. */
  private authToken: string | null = null;
  private readonly streams = new StreamTable((topic, data) => this.sendNow(wire.notification(topic, data)));
  private readonly incoming = new Map<string, Incoming>();
  private outbox: { msg: Message; requestId?: string }[] = [];
  private readonly methods = new Map<string, MethodHandler>();
  private readonly topics = new Map<string, Set<TopicHandler>>();
  private readonly subscribing = new Map<string, Promise<void>>();
  private readonly seen = new Map<string, Seen>();
  /** The last delivery received per room: the `since` of a recovery. */
  private readonly positions = new Map<string, StreamPosition>();
  /** `ackId`s of reliable notifications already delivered. */
  private readonly seenAcks = new RecentIds(ACK_WINDOW);
  /** Reliable notifications sent and not acknowledged yet, by `ackId`. */
  private readonly unacked = new Map<string, Unacked>();
  /** Answers to recent requests, re-sent when the same `requestId` comes again. */
  private readonly answered = new Map<string, ResponseMessage>();
  /** Wakes a wait between recovery retries (on close()). */
  private wakeRetry: (() => void) | null = null;
  private peerName: string | null = null;
  /** Requests answered after the caller gave up: the server may complain about the late answer. */
  private readonly abandoned = new Map<string, number>();

  private token: { value: string; expiresAt: number } | null = null;
  private tokenSupported = true;
  private tokenTimer: ReturnType<typeof setTimeout> | undefined;
  private tokenStaleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(url: string, options: StarlingOptions = {}) {
    super();
    this.url = url;
    this.opts = {
      reconnect: options.reconnect ?? true,
      reconnectDelay: options.reconnectDelay ?? 250,
      maxReconnectDelay: options.maxReconnectDelay ?? 10_000,
      maxReconnectAttempts: options.maxReconnectAttempts ?? Infinity,
      requestTimeout: options.requestTimeout ?? 30_000,
      connectTimeout: options.connectTimeout ?? 10_000,
      recovery: options.recovery ?? true,
      heartbeatInterval: options.heartbeatInterval ?? 25_000,
      heartbeatTimeout: options.heartbeatTimeout ?? 10_000,
      maxQueue: options.maxQueue ?? 1000,
      recoveryRetryDelay: options.recoveryRetryDelay ?? 100,
      ...(options.WebSocket ? { WebSocket: options.WebSocket } : {}),
    };
    if (options.recoveryToken) this.token = { value: options.recoveryToken, expiresAt: jwtExpiry(options.recoveryToken) };
  }

  /** This connection's id, given by the server's welcome; `null` before it. */
  get starlingId(): string | null {
    return this._starlingId;
  }

  /**
   * The current recovery token (refreshed before it expires), or `null` when
   * the server gives none. Reconnections use it automatically.
   */
  get recoveryToken(): string | null {
    return this.token && this.token.expiresAt > Date.now() ? this.token.value : null;
  }

  /** The connection state. */
  get state(): StarlingState {
    return this._state;
  }

  /** `true` while a socket is open and welcomed. */
  get connected(): boolean {
    return this._state === "open";
  }

  /** The topics subscribed to. */
  get subscriptions(): string[] {
    return [...this.topics.keys()];
  }

  // ------------------------------------------------------------ lifecycle

  /**
   * Opens the connection; resolves with the server's welcome.
   *
   * Rejects with `CONNECTION_FAILED` when the first attempt fails; automatic
   * reconnection starts only once a connection has succeeded.
   */
  connect(): Promise<Welcome> {
    if (this._state === "open" && this.socket) {
      return Promise.resolve(this.lastWelcome as Welcome);
    }
    if (this.connecting) return this.connecting;
    if (this._state === "reconnecting") {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
    } else {
      this._state = "connecting";
    }
    const p = this.attempt().finally(() => {
      if (this.connecting === p) this.connecting = null;
    });
    this.connecting = p;
    return p;
  }

  /**
   * Closes the connection for good: no reconnection, in-flight requests fail
   * with `CONNECTION_CLOSED`, subscriptions and the recovery token are
   * dropped. `connect()` may be called again afterwards for a new session.
   */
  async close(code = 1000, reason = "client closed"): Promise<void> {
    const wasActive = this._state !== "idle" && this._state !== "closed";
    this._state = "closed";
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.stopTimers();
    const err = new StarlingError(ErrorCodes.CONNECTION_CLOSED, "the client was closed");
    this.failInFlight(err);
    this.failOutbox(err);
    this.failUnacked(err);
    this.topics.clear();
    this.subscribing.clear();
    this.seen.clear();
    this.positions.clear();
    this.seenAcks.clear();
    this.answered.clear();
    this.wakeRetry?.();
    this.token = null;
    this.peerName = null;
    this.everConnected = false;
    this.attempts = 0;
    this.abortAttempt?.("the client was closed while connecting", ErrorCodes.CONNECTION_CLOSED);
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      await new Promise<void>((resolve) => {
        const done = setTimeout(resolve, 1000);
        socket.onclose = () => {
          clearTimeout(done);
          resolve();
        };
        socket.onmessage = null;
        socket.onerror = ignoreError;
        try {
          socket.close(code, reason);
        } catch {
          clearTimeout(done);
          resolve();
        }
      });
    }
    if (wasActive) this.emit("disconnected", { code, reason, willReconnect: false });
  }

  /**
   * Drops the current socket and reconnects at once, recovering the session
   * (for instance after the browser's `online` event). Does nothing unless
   * the client has connected.
   */
  reconnect(): void {
    if (!this.everConnected || this._state === "closed" || this._state === "idle") return;
    if (this.socket) {
      this.dropSocket(4000, "reconnect requested");
    } else {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      this.scheduleReconnect(0);
    }
  }

  private lastWelcome: Welcome | null = null;
  /** Ends the connection attempt in progress, if any. */
  private abortAttempt: ((why: string, code: string) => void) | null = null;

  /**
   * A connection attempt; when the server says the session to recover is
   * still held by the old connection (it has not noticed the drop yet), the
   * new socket is closed and the recovery retried after a short wait, until
   * the token expires (then the session starts fresh). The first
   * connection of a client (a token given in the options, e.g. after a page
   * reload, possibly still used by another tab) retries for at most
   * `connectTimeout`.
   */
  private async attempt(): Promise<Welcome> {
    let wait = this.opts.recoveryRetryDelay;
    const heldUntil = this.everConnected ? Infinity : Date.now() + this.opts.connectTimeout;
    for (;;) {
      try {
        return await this.attemptOnce(Date.now() < heldUntil);
      } catch (err) {
        if (!(err instanceof SessionHeld)) throw err;
      }
      const until = Math.min(this.token?.expiresAt ?? 0, heldUntil);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(0, Math.min(wait, until - Date.now())));
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.wakeRetry = done;
      });
      this.wakeRetry = null;
      wait = Math.min(wait * 2, 2000);
      if (this._state === "closed") {
        throw new StarlingError(ErrorCodes.CONNECTION_CLOSED, "the client was closed while connecting");
      }
    }
  }

  /** One connection attempt: socket open, then the welcome. */
  private async attemptOnce(retryHeld: boolean): Promise<Welcome> {
    let Ctor: WebSocketConstructor;
    try {
      Ctor = await resolveWebSocket(this.opts.WebSocket);
    } catch (err) {
      this.attemptFailed();
      throw new StarlingError(ErrorCodes.CONNECTION_FAILED, (err as Error).message);
    }
    if (this._state === "closed") {
      throw new StarlingError(ErrorCodes.CONNECTION_CLOSED, "the client was closed while connecting");
    }
    const url = this.connectUrl();
    const recovering = url.includes("recover=");
    return new Promise<Welcome>((resolve, reject) => {
      let socket: SocketLike;
      try {
        socket = new Ctor(url, wire.SUBPROTOCOL);
      } catch (err) {
        this.attemptFailed();
        reject(new StarlingError(ErrorCodes.CONNECTION_FAILED, `cannot open ${this.url}: ${(err as Error).message}`));
        return;
      }
      this.socket = socket;
      try {
        socket.binaryType = "arraybuffer";
      } catch {
        // not settable everywhere; JSON frames are text anyway
      }
      let settled = false;
      const fail = (why: string, code: string = ErrorCodes.CONNECTION_FAILED) => {
        if (settled) return;
        settled = true;
        this.abortAttempt = null;
        clearTimeout(timer);
        socket.onopen = socket.onmessage = socket.onclose = null;
        socket.onerror = ignoreError;
        if (this.socket === socket) this.socket = null;
        try {
          socket.close();
        } catch {
          // already closing
        }
        this.attemptFailed();
        reject(new StarlingError(code, why));
      };
      this.abortAttempt = fail;
      const timer = setTimeout(
        () => fail(`no welcome from ${this.url} within ${this.opts.connectTimeout} ms`),
        this.opts.connectTimeout,
      );
      socket.onerror = () => {
        // A close event follows; it carries the code.
      };
      socket.onclose = (ev) => fail(`connection to ${this.url} closed before the welcome (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
      socket.onopen = () => {
        if (socket.protocol && socket.protocol !== wire.SUBPROTOCOL) {
          fail(`server chose subprotocol ${socket.protocol}, expected ${wire.SUBPROTOCOL}`);
        }
      };
      socket.onmessage = (ev) => {
        const msg = this.decodeFrame(ev.data);
        if (!msg) return;
        if (!settled && msg.type === "notification" && msg.notification.topic === wire.WELCOME_TOPIC) {
          settled = true;
          this.abortAttempt = null;
          clearTimeout(timer);
          const welcome = (msg.notification.data ?? {}) as Welcome;
          if (retryHeld && recovering && welcome.recovered !== true && welcome.reason === wire.SESSION_HELD_REASON && this.recoveryToken !== null) {
            // The old connection wins until the server sees it close: do not
            // take a fresh session now, try the recovery again shortly.
            socket.onopen = socket.onmessage = socket.onclose = null;
            socket.onerror = ignoreError;
            if (this.socket === socket) this.socket = null;
            try {
              socket.close(1000, "session still held; retrying the recovery");
            } catch {
              // already closing
            }
            reject(new SessionHeld(welcome.reason));
            return;
          }
          socket.onmessage = (e) => this.onFrame(e.data);
          socket.onclose = (e) => this.onSocketClose(socket, e.code, e.reason);
          this.onWelcome(welcome);
          resolve(welcome);
          return;
        }
        this.onMessage(msg);
      };
    });
  }

  /**
   * Replaces the connection's credential before it expires: sends
   * `helios:refresh {token}` (the server checks it, keeps the connection
   * past the old token's `exp`, and answers `{user, expiresAt}`), and uses
   * the new token (`?token=`) for every later reconnection.
   *
   * ```ts
   * const client = new Starling(`wss://app.example/ws?token=${first}`);
   * await client.connect();
   * // before `first` expires:
   * await client.refreshAuth(await fetchNewToken());
   * ```
   */
  async refreshAuth<T = unknown>(token: string): Promise<T> {
    const answer = await this.request<T>("helios:refresh", { token });
    this.authToken = token;
    return answer;
  }

  private connectUrl(): string {
    const loc = (globalThis as { location?: { href: string } }).location;
    const u = new URL(this.url, loc?.href);
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    u.searchParams.delete("recover");
    u.searchParams.delete("since");
    if (this.authToken !== null) u.searchParams.set("token", this.authToken);
    const token = this.recoveryToken;
    if (token !== null) {
      let query = u.search.replace(/^\?/, "");
      query += `${query ? "&" : ""}recover=${encodeURIComponent(token)}`;
      // Where each room stood at the last delivery received, so the server
      // also replays what was lost in flight before it saw the drop.
      const since: Record<string, StreamPosition> = {};
      let any = false;
      for (const [topic, pos] of this.positions) {
        if (!this.topics.has(topic)) continue;
        since[topic] = pos;
        any = true;
      }
      if (any) query += `&since=${encodeURIComponent(JSON.stringify(since))}`;
      u.search = `?${query}`;
    }
    return u.toString();
  }

  private attemptFailed(): void {
    if (this._state === "closed") return;
    if (this.everConnected && this.opts.reconnect) {
      this._state = "reconnecting";
      this.scheduleReconnect();
    } else {
      this._state = "idle";
      this.failOutbox(new StarlingError(ErrorCodes.NOT_CONNECTED, "the connection could not be opened"));
    }
  }

  private onWelcome(welcome: Welcome): void {
    const reconnect = this.everConnected;
    const previousId = this._starlingId;
    this.everConnected = true;
    this.attempts = 0;
    this._state = "open";
    this._starlingId = typeof welcome.starlingId === "string" ? welcome.starlingId : null;
    this.lastWelcome = welcome;
    const recovered = welcome.recovered === true;
    // A fresh session makes the old token useless. A recovered one keeps it
    // until the fresh one (fetched below) arrives: the recovered connection
    // leaves a snapshot under the same id when it drops, so a drop before
    // the answer (queued behind the replay) still recovers.
    if (!recovered) this.token = null;
    const rooms = Array.isArray(welcome.rooms) ? welcome.rooms.filter((r): r is string => typeof r === "string") : [];
    if (reconnect && !recovered) {
      // A new session: the server forgot our rooms and name.
      this.seen.clear();
      this.positions.clear();
      this.restoreSession();
    } else if (reconnect && recovered && Array.isArray(welcome.rooms)) {
      // Topics the server did not put back (none, normally): subscribe again.
      const back = new Set(rooms);
      const lost = [...this.topics.keys()].filter((t) => !back.has(t));
      if (lost.length > 0) this.restoreSession(lost, false);
    }
    this.flushOutbox();
    for (const [ackId, r] of this.unacked) if (r.waiting) this.sendReliable(ackId);
    this.startHeartbeat();
    this.refreshToken();
    const connected: ConnectedEvent = { starlingId: this._starlingId ?? "", recovered, reconnect, welcome };
    if (typeof welcome.reason === "string") connected.reason = welcome.reason;
    this.emit("connected", connected);
    if (reconnect && recovered) {
      const missedRooms = Array.isArray(welcome.missedRooms) ? welcome.missedRooms.filter((r): r is string => typeof r === "string") : [];
      this.emit("recovered", {
        starlingId: this._starlingId ?? previousId ?? "",
        topics: this.subscriptions,
        missed: welcome.missed === true || missedRooms.length > 0,
        missedRooms,
        rooms,
      });
    }
  }

  /** Re-claims the name and re-subscribes topics after an unrecovered reconnection. */
  private restoreSession(topics: string[] = [...this.topics.keys()], reclaimName = true): void {
    if (reclaimName && this.peerName !== null) {
      const name = this.peerName;
      this.request("helios:identify", { name }).catch((err) => this.reportError(err));
    }
    for (const topic of topics) {
      this.request("helios:subscribe", { topic }).catch((err) => {
        this.reportError(
          new StarlingError((err as StarlingError).code ?? ErrorCodes.METHOD_ERROR, `re-subscribing to ${topic} failed: ${(err as Error).message}`),
        );
      });
    }
  }

  private onSocketClose(socket: SocketLike, code: number, reason: string): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.stopTimers();
    this.failInFlight(new StarlingError(ErrorCodes.CONNECTION_CLOSED, `connection closed (code ${code})`));
    if (this._state === "closed") return;
    const refused = closeForbidsRetry(code);
    const willReconnect = this.opts.reconnect && !refused;
    this._state = willReconnect ? "reconnecting" : "idle";
    if (!willReconnect) {
      const err = new StarlingError(ErrorCodes.NOT_CONNECTED, `disconnected (code ${code})`);
      this.failOutbox(err);
      this.failUnacked(err);
    }
    this.emit("disconnected", { code, reason, willReconnect });
    if (refused) this.reportError(closeError(code, reason));
    if (willReconnect && this._state === "reconnecting") this.scheduleReconnect();
  }

  /** Closes the socket as if the link had failed: reconnection follows. */
  private dropSocket(code: number, reason: string): void {
    const socket = this.socket;
    if (!socket) return;
    try {
      socket.close(code, reason);
    } catch {
      // ignore
    }
    // Do not wait for the close handshake of a possibly dead link.
    socket.onmessage = null;
    this.onSocketClose(socket, code === 4000 ? 1006 : code, reason);
    socket.onclose = null;
  }

  private scheduleReconnect(delay?: number): void {
    if (this.reconnectTimer !== undefined || this._state !== "reconnecting") return;
    if (this.attempts >= this.opts.maxReconnectAttempts) {
      this._state = "idle";
      const err = new StarlingError(
        ErrorCodes.CONNECTION_FAILED,
        `gave up reconnecting after ${this.attempts} attempts`,
      );
      this.failOutbox(err);
      this.reportError(err);
      return;
    }
    const ceiling = Math.min(this.opts.maxReconnectDelay, this.opts.reconnectDelay * 2 ** this.attempts);
    // Equal jitter: between half and all of the exponential delay.
    const wait = delay ?? ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this._state !== "reconnecting" || this.connecting) return;
      const p = this.attempt().finally(() => {
        if (this.connecting === p) this.connecting = null;
      });
      this.connecting = p;
      p.catch(() => {
        // attemptFailed() has scheduled the next try
      });
    }, wait);
  }

  private stopTimers(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    clearTimeout(this.tokenTimer);
    this.tokenTimer = undefined;
    clearTimeout(this.tokenStaleTimer);
    this.tokenStaleTimer = undefined;
  }

  private startHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    if (!(this.opts.heartbeatInterval > 0)) return;
    this.heartbeatTimer = setInterval(() => {
      if (this._state !== "open") return;
      const socket = this.socket;
      this.request("system:ping", {}, { timeout: this.opts.heartbeatTimeout }).catch((err: StarlingError) => {
        if (err.code === ErrorCodes.REQUEST_TIMEOUT && this.socket === socket) {
          this.dropSocket(4000, "heartbeat timeout");
        }
      });
    }, this.opts.heartbeatInterval);
  }

  // ------------------------------------------------------------ recovery token

  /** Fetches a recovery token and schedules the next refresh. */
  private refreshToken(): void {
    clearTimeout(this.tokenTimer);
    this.tokenTimer = undefined;
    if (!this.opts.recovery || !this.tokenSupported || this._state !== "open") return;
    const socket = this.socket;
    this.request("starling:getToken", {}, { timeout: 10_000 }).then(
      (data) => {
        if (this.socket !== socket) return;
        const { token, expiresIn } = (data ?? {}) as { token?: unknown; expiresIn?: unknown };
        if (typeof token !== "string" || typeof expiresIn !== "number") {
          this.reportError(new StarlingError(ErrorCodes.INVALID_MESSAGE_FORMAT, "starling:getToken returned no {token, expiresIn}"));
          return;
        }
        const ttl = Math.max(0, expiresIn * 1000);
        this.token = { value: token, expiresAt: Date.now() + ttl };
        // Refresh at three quarters of the lifetime, and at most every second.
        this.tokenTimer = setTimeout(() => this.refreshToken(), Math.max(1000, ttl * 0.75));
      },
      (err: StarlingError) => {
        if (this.socket !== socket || this._state !== "open") return;
        if (err.code === ErrorCodes.METHOD_NOT_FOUND) {
          // The server has no recovery secret: no recovery for this client.
          this.tokenSupported = false;
          return;
        }
        this.reportError(err);
        this.tokenTimer = setTimeout(() => this.refreshToken(), 5000);
      },
    );
  }

  /** The session changed (rooms, name): get a token that reflects it. */
  private tokenStale(): void {
    if (!this.opts.recovery || !this.tokenSupported || this._state !== "open") return;
    clearTimeout(this.tokenStaleTimer);
    this.tokenStaleTimer = setTimeout(() => {
      this.tokenStaleTimer = undefined;
      this.refreshToken();
    }, 50);
  }

  // ------------------------------------------------------------ sending

  private sendNow(msg: Message): boolean {
    const socket = this.socket;
    if (this._state !== "open" || !socket) return false;
    try {
      socket.send(JSON.stringify(msg));
      return true;
    } catch (err) {
      this.reportError(err);
      return false;
    }
  }

  /** Sends now, or keeps the message for the next connection. Throws when neither is possible. */
  private sendOrQueue(msg: Message, requestId?: string): boolean {
    if (this._state === "open" && this.sendNow(msg)) return true;
    if (this._state === "reconnecting" || this._state === "connecting" || (this._state === "open" && !this.socket)) {
      if (this.outbox.length >= this.opts.maxQueue) {
        throw new StarlingError(ErrorCodes.QUEUE_FULL, `more than ${this.opts.maxQueue} messages wait for a reconnection`);
      }
      this.outbox.push(requestId === undefined ? { msg } : { msg, requestId });
      return false;
    }
    throw new StarlingError(ErrorCodes.NOT_CONNECTED, "not connected: call connect() first");
  }

  private flushOutbox(): void {
    const queued = this.outbox;
    this.outbox = [];
    for (const item of queued) {
      if (item.requestId !== undefined) {
        const p = this.pending.get(item.requestId);
        if (!p) continue; // timed out or cancelled while waiting
        p.sent = true;
      }
      if (!this.sendNow(item.msg)) this.outbox.push(item);
    }
  }

  private failOutbox(err: StarlingError): void {
    const queued = this.outbox;
    this.outbox = [];
    for (const item of queued) {
      if (item.requestId !== undefined) this.pending.get(item.requestId)?.reject(err);
    }
  }

  private failInFlight(err: StarlingError): void {
    this.streams.failAll(err);
    for (const p of [...this.pending.values()]) if (p.sent) p.reject(err);
    for (const [id, inc] of this.incoming) {
      inc.done = true;
      clearTimeout(inc.timer);
      inc.controller.abort(err);
      this.incoming.delete(id);
    }
  }

  /**
   * Calls a method on the server (or, with `peer`, on another connection).
   * Resolves with the response data; rejects with a {@link StarlingError}.
   *
   * While the client reconnects, the request waits for the new connection
   * (its timeout keeps running).
   */
  request<T = unknown>(method: string, payload?: unknown, options: RequestOptions = {}): Promise<T> {
    return this.startRequest<T>(method, payload, options).response;
  }

  /**
   * Calls a method and streams data to its handler (an upload, a file):
   * write to `stream`, `end()` it, then await `response`. Writes wait for
   * the server's credit. See docs/protocol.md, "Streams".
   *
   * ```ts
   * const { stream, response } = client.requestStreaming("files:put", {}, { name: "a.txt", size: 5 });
   * await stream.write("hello");
   * await stream.end();
   * await response;
   * ```
   */
  requestStreaming<T = unknown>(
    method: string,
    payload: unknown,
    info: StreamInfo = {},
    options: RequestOptions = {},
  ): { response: Promise<T>; stream: StreamWriter } {
    const { requestId, response } = this.startRequest<T>(method, payload, options);
    return { response, stream: this.streams.open(requestId, info) };
  }

  /**
   * Calls a method whose handler streams back to this client (a
   * download). Read the stream before awaiting `response`: a handler that
   * streams more than the credit window answers once it was read.
   *
   * ```ts
   * const { stream, response } = client.requestWithStream("files:get", { name: "a.txt" });
   * const bytes = await (await stream).readAll();
   * await response;
   * ```
   */
  requestWithStream<T = unknown>(
    method: string,
    payload?: unknown,
    options: RequestOptions = {},
  ): { response: Promise<T>; stream: Promise<IncomingStream> } {
    const { requestId, response } = this.startRequest<T>(method, payload, options);
    const stream = this.streams.take(requestId, this.pending.has(requestId));
    // Either may settle while the caller awaits the other: not "unhandled".
    stream.catch(() => {});
    return { response, stream };
  }

  private startRequest<T>(method: string, payload: unknown, options: RequestOptions): { requestId: string; response: Promise<T> } {
    const requestId = wire.uuidv4();
    const timeout = options.timeout ?? this.opts.requestTimeout;
    const { signal, peer } = options;
    const response = new Promise<T>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new StarlingError(ErrorCodes.REQUEST_CANCELLED, `request ${method} was cancelled`));
        return;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = () => {
        const p = this.pending.get(requestId);
        if (!p) return;
        this.cancelRemote(requestId, p);
        p.reject(new StarlingError(ErrorCodes.REQUEST_CANCELLED, `request ${method} was cancelled`));
      };
      const entry: Pending = {
        sent: false,
        resolve: (data) => {
          entry.cleanup();
          resolve(data as T);
        },
        reject: (err) => {
          entry.cleanup();
          reject(err);
        },
        cleanup: () => {
          this.pending.delete(requestId);
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      this.pending.set(requestId, entry);
      if (Number.isFinite(timeout) && timeout > 0) {
        timer = setTimeout(() => {
          this.cancelRemote(requestId, entry);
          entry.reject(new StarlingError(ErrorCodes.REQUEST_TIMEOUT, `request ${method} timed out after ${timeout} ms`));
        }, timeout);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        entry.sent = this.sendOrQueue(wire.request(requestId, method, payload, peer, timeout), requestId);
      } catch (err) {
        entry.reject(err as StarlingError);
      }
    });
    return { requestId, response };
  }

  /**
   * Tells the server to stop working on a request this side gave up on (for
   * a relayed request the server passes the cancel on to the peer).
   */
  private cancelRemote(requestId: string, p: Pending): void {
    if (!p.sent) return;
    this.sendNow(wire.notification(wire.CANCEL_TOPIC, { requestId }));
  }

  /**
   * Sends a one-way notification on `topic` (to the server, or with `peer`
   * to another connection). Throws `NOT_CONNECTED` when there is no
   * connection and none is coming.
   */
  notify(topic: string, data?: unknown, options: NotifyOptions = {}): void {
    this.sendOrQueue(wire.notification(topic, data, options.peer));
  }

  /**
   * Sends a notification with an `ackId` and resends it (same `ackId`, with
   * backoff) until the server acknowledges it with `helios:ack`. Resolves on
   * the acknowledgement; rejects with `REQUEST_TIMEOUT` after `1 + retries`
   * unacknowledged sends, `NOT_CONNECTED` when there is no connection and
   * none is coming, `CONNECTION_CLOSED` on `close()`. While the client
   * reconnects the notification waits (its sends are not counted).
   *
   * The server handles the first copy and drops later ones with the same
   * `ackId` (within one connection).
   */
  notifyReliable(topic: string, data?: unknown, options: ReliableOptions = {}): Promise<void> {
    if (this._state === "idle" || this._state === "closed") {
      return Promise.reject(new StarlingError(ErrorCodes.NOT_CONNECTED, "not connected: call connect() first"));
    }
    const ackId = wire.uuidv4();
    const msg = wire.notification(topic, data, options.peer);
    msg.notification.ackId = ackId;
    return new Promise<void>((resolve, reject) => {
      const entry: Unacked = {
        msg,
        sends: 0,
        retries: Math.max(0, options.retries ?? 5),
        delay: Math.max(1, options.delay ?? 500),
        maxDelay: Math.max(1, options.maxDelay ?? 8000),
        waiting: false,
        resolve: () => {
          clearTimeout(entry.timer);
          this.unacked.delete(ackId);
          resolve();
        },
        reject: (err) => {
          clearTimeout(entry.timer);
          this.unacked.delete(ackId);
          reject(err);
        },
      };
      this.unacked.set(ackId, entry);
      this.sendReliable(ackId);
    });
  }

  /** Sends (or resends) a reliable notification and schedules the next try. */
  private sendReliable(ackId: string): void {
    const r = this.unacked.get(ackId);
    if (!r) return;
    clearTimeout(r.timer);
    r.timer = undefined;
    if (r.sends > r.retries) {
      r.reject(new StarlingError(ErrorCodes.REQUEST_TIMEOUT, `notification ${r.msg.notification.topic} not acknowledged after ${r.sends} sends`));
      return;
    }
    if (!this.sendNow({ ...r.msg, timestamp: Date.now() })) {
      r.waiting = true; // sent again at the next welcome
      return;
    }
    r.waiting = false;
    const wait = Math.min(r.maxDelay, r.delay * 2 ** r.sends);
    r.sends++;
    r.timer = setTimeout(() => this.sendReliable(ackId), wait);
  }

  private failUnacked(err: StarlingError): void {
    for (const r of [...this.unacked.values()]) r.reject(err);
  }

  // ------------------------------------------------------------ methods

  /**
   * Answers requests for `name` sent by the server or relayed from a peer.
   * The handler's return value is the response data; a throw answers
   * `METHOD_ERROR` (or the `code` of a thrown {@link StarlingError}).
   * Returns a function that removes the handler.
   */
  method(name: string, handler: MethodHandler): () => void {
    if (typeof name !== "string" || name.length === 0) throw new TypeError("method name must be a non-empty string");
    if (typeof handler !== "function") throw new TypeError("method handler must be a function");
    const ns = name.split(/[:.]/)[0] ?? "";
    if (RESERVED_NAMESPACES.includes(ns)) {
      throw new TypeError(`the namespace "${ns}" is reserved for built-in methods`);
    }
    this.methods.set(name, handler);
    return () => {
      if (this.methods.get(name) === handler) this.methods.delete(name);
    };
  }

  private onRequest(msg: RequestMessage): void {
    const { requestId, method, peer } = msg;
    // A resent request (reliable server→client requests keep their id): one
    // still running is ignored, one already answered gets the same answer.
    if (this.incoming.has(requestId)) return;
    const answer = this.answered.get(requestId);
    if (answer) {
      this.sendNow({ ...answer, timestamp: Date.now() });
      return;
    }
    const handler = this.methods.get(method) ?? builtin(method);
    if (!handler) {
      this.sendNow(
        wire.failure(requestId, { code: ErrorCodes.METHOD_NOT_FOUND, message: `method ${method} is not registered on this client` }, peer),
      );
      return;
    }
    const controller = new AbortController();
    const inc: Incoming = peer ? { controller, done: false, peer } : { controller, done: false };
    this.incoming.set(requestId, inc);
    const socket = this.socket;
    const finish = (response: ResponseMessage) => {
      if (inc.done) return;
      inc.done = true;
      clearTimeout(inc.timer);
      this.incoming.delete(requestId);
      this.rememberAnswer(requestId, response);
      if (this.socket === socket) this.sendNow(response);
    };
    if (typeof msg.timeout === "number" && msg.timeout > 0) {
      inc.timer = setTimeout(() => {
        controller.abort(new StarlingError(ErrorCodes.REQUEST_TIMEOUT, "request timed out"));
        this.rememberAbandoned(requestId);
        finish(wire.failure(requestId, { code: ErrorCodes.REQUEST_TIMEOUT, message: `${method} did not finish within ${msg.timeout} ms` }, peer));
      }, msg.timeout);
    }
    const ctx: MethodContext = { requestId, method, signal: controller.signal, ...(peer ? { peer } : {}) };
    Promise.resolve()
      .then(() => handler(msg.payload, ctx))
      .then(
        (data) => finish(wire.success(requestId, data, peer)),
        (err: unknown) => finish(wire.failure(requestId, errorBody(err), peer)),
      );
  }

  private rememberAnswer(requestId: string, response: ResponseMessage): void {
    this.answered.delete(requestId);
    this.answered.set(requestId, response);
    if (this.answered.size > ANSWERED_KEPT) {
      const oldest = this.answered.keys().next().value;
      if (oldest !== undefined) this.answered.delete(oldest);
    }
  }

  private rememberAbandoned(requestId: string): void {
    const now = Date.now();
    this.abandoned.set(requestId, now);
    if (this.abandoned.size > 256) {
      for (const [id, at] of this.abandoned) if (now - at > 30_000 || this.abandoned.size > 256) this.abandoned.delete(id);
    }
  }

  /** A `helios:error` notification: fail the request it names, or report it. */
  private onServerError(data: unknown): void {
    const d = (data ?? {}) as { code?: unknown; message?: unknown; requestId?: unknown; details?: unknown };
    const code = typeof d.code === "string" ? d.code : ErrorCodes.METHOD_ERROR;
    const message = typeof d.message === "string" ? d.message : "server error";
    const err = new StarlingError(code, message, d.details);
    if (typeof d.requestId === "string") {
      const p = this.pending.get(d.requestId);
      if (p) return p.reject(err);
      // The server did not want our answer to a request it had given up on.
      if (this.abandoned.delete(d.requestId)) return;
      // Nor a repeated answer to a resent request it had already settled.
      if (this.answered.has(d.requestId) && code === ErrorCodes.INVALID_MESSAGE_FORMAT) return;
    }
    this.reportError(err);
  }

  private onCancel(data: unknown): void {
    const requestId = (data as { requestId?: unknown } | null)?.requestId;
    if (typeof requestId !== "string") return;
    const inc = this.incoming.get(requestId);
    if (!inc || inc.done) return;
    inc.done = true;
    clearTimeout(inc.timer);
    this.incoming.delete(requestId);
    inc.controller.abort(new StarlingError(ErrorCodes.REQUEST_CANCELLED, "the caller cancelled the request"));
    this.rememberAbandoned(requestId);
    const response = wire.failure(requestId, { code: ErrorCodes.REQUEST_CANCELLED, message: "the caller cancelled the request" }, inc.peer);
    this.rememberAnswer(requestId, response);
    this.sendNow(response);
  }

  // ------------------------------------------------------------ rooms

  /**
   * Subscribes to a room; `handler` receives every delivery on `topic`
   * (duplicates dropped by epoch and offset). Resolves, once the server
   * confirmed, with a function that removes this handler and unsubscribes
   * when it was the topic's last one.
   */
  async subscribe(topic: string, handler: TopicHandler): Promise<() => Promise<void>> {
    if (typeof handler !== "function") throw new TypeError("subscribe handler must be a function");
    let set = this.topics.get(topic);
    const first = !set;
    if (!set) {
      set = new Set();
      this.topics.set(topic, set);
    }
    set.add(handler);
    const inflight = this.subscribing.get(topic);
    if (first) {
      const p = this.request("helios:subscribe", { topic }).then(() => undefined);
      this.subscribing.set(topic, p);
      try {
        await p;
        this.tokenStale();
      } catch (err) {
        if (this.topics.get(topic) === set) this.topics.delete(topic);
        throw err;
      } finally {
        if (this.subscribing.get(topic) === p) this.subscribing.delete(topic);
      }
    } else if (inflight) {
      try {
        await inflight;
      } catch (err) {
        set.delete(handler);
        throw err;
      }
    }
    let active = true;
    return async () => {
      if (!active) return;
      active = false;
      const current = this.topics.get(topic);
      if (!current || !current.delete(handler) || current.size > 0) return;
      this.topics.delete(topic);
      this.seen.delete(topic);
      this.positions.delete(topic);
      if (this._state === "open" || this._state === "reconnecting") {
        await this.request("helios:unsubscribe", { topic });
        this.tokenStale();
      }
    };
  }

  /**
   * Publishes `data` to everyone subscribed to `topic`; resolves with
   * `{topic, delivered, offset, epoch}` (the publication's place in the room).
   */
  publish(
    topic: string,
    data: unknown,
    options: Omit<RequestOptions, "peer"> = {},
  ): Promise<{ topic: string; delivered: number; offset?: number; epoch?: string }> {
    return this.request("helios:publish", { topic, data }, options);
  }

  /** The connections in a room, as the server reports them. */
  presence<T = unknown>(topic: string, options: Omit<RequestOptions, "peer"> = {}): Promise<T> {
    return this.request("helios:presence", { topic }, options);
  }

  /** Claims a peer name, so others can reach this client with `peer: {name}`. */
  async identify<T = unknown>(name: string, options: Omit<RequestOptions, "peer"> = {}): Promise<T> {
    const result = await this.request<T>("helios:identify", { name }, options);
    this.peerName = name;
    this.tokenStale();
    return result;
  }

  // ------------------------------------------------------------ receiving

  private decodeFrame(data: unknown): Message | null {
    const text = frameText(data);
    if (text === undefined) {
      this.reportError(new StarlingError(ErrorCodes.INVALID_MESSAGE_FORMAT, "unreadable frame"));
      return null;
    }
    try {
      return wire.decode(text);
    } catch (err) {
      const e = err as wire.DecodeError;
      if (e.requestId !== undefined && this.pending.has(e.requestId)) {
        // A broken answer to one of ours: fail that request rather than hang.
        this.pending.get(e.requestId)?.reject(new StarlingError(ErrorCodes.INVALID_MESSAGE_FORMAT, e.message));
      } else if (e.requestId !== undefined) {
        this.sendNow(wire.failure(e.requestId, { code: ErrorCodes.INVALID_MESSAGE_FORMAT, message: e.message }));
      }
      this.reportError(new StarlingError(ErrorCodes.INVALID_MESSAGE_FORMAT, e.message));
      return null;
    }
  }

  private onFrame(data: unknown): void {
    const msg = this.decodeFrame(data);
    if (msg) this.onMessage(msg);
  }

  private onMessage(msg: Message): void {
    switch (msg.type) {
      case "response":
        return this.onResponse(msg);
      case "request":
        return this.onRequest(msg);
      case "notification":
        return this.onNotification(msg);
    }
  }

  private onResponse(msg: ResponseMessage): void {
    if (msg.requestId !== undefined) this.streams.answered(msg.requestId);
    const p = msg.requestId === undefined ? undefined : this.pending.get(msg.requestId);
    if (!p) {
      if (!msg.success && msg.error) {
        // An error the server could not tie to a request (e.g. a frame it could not read).
        this.reportError(new StarlingError(msg.error.code, msg.error.message, msg.error.details));
      }
      return;
    }
    if (msg.success) p.resolve(msg.data === undefined ? null : msg.data);
    else {
      const e = msg.error ?? { code: ErrorCodes.METHOD_ERROR, message: "request failed" };
      p.reject(new StarlingError(e.code, e.message, e.details));
    }
  }

  private onNotification(msg: NotificationMessage): void {
    const n = msg.notification;
    if (n.topic?.startsWith("stream:") && msg.peer === undefined) {
      return this.streams.onFrame(n.topic, n.data, (id) => this.pending.has(id));
    }
    if (n.topic === wire.ACK_TOPIC && msg.peer === undefined) {
      const ackId = (n.data as { ackId?: unknown } | null)?.ackId;
      if (typeof ackId === "string") this.unacked.get(ackId)?.resolve();
      return;
    }
    if (typeof n.ackId === "string") {
      // Reliable: acknowledge every copy, deliver only the first.
      this.sendNow(wire.notification(wire.ACK_TOPIC, { ackId: n.ackId }));
      if (!this.seenAcks.firstTime(n.ackId)) return;
    }
    if (n.topic === wire.CANCEL_TOPIC) return this.onCancel(n.data);
    if (n.topic === wire.WELCOME_TOPIC) return; // only meaningful first
    if (n.topic === wire.ERROR_TOPIC && msg.peer === undefined) return this.onServerError(n.data);
    const event: NotificationEvent = { data: n.data === undefined ? null : n.data };
    if (n.topic !== undefined) event.topic = n.topic;
    if (msg.peer !== undefined) event.peer = msg.peer;
    if (typeof n.offset === "number") event.offset = n.offset;
    if (n.epoch !== undefined) event.epoch = n.epoch;
    if (n.ackId !== undefined) event.ackId = n.ackId;
    const handlers = n.topic === undefined ? undefined : this.topics.get(n.topic);
    if (handlers && n.topic !== undefined && typeof n.offset === "number") {
      const epoch = n.epoch ?? "";
      if (this.isDuplicate(n.topic, epoch, n.offset)) return;
      const pos = this.positions.get(n.topic);
      if (!pos || pos.epoch !== epoch || n.offset > pos.offset) this.positions.set(n.topic, { offset: n.offset, epoch });
    }
    if (handlers) {
      for (const h of [...handlers]) {
        try {
          h(event.data, event);
        } catch (err) {
          this.reportError(err);
        }
      }
    }
    this.emit("notification", event);
  }

  /** Records a room delivery; `true` when it was already seen. */
  private isDuplicate(topic: string, epoch: string, offset: number): boolean {
    let s = this.seen.get(topic);
    if (!s || s.epoch !== epoch) {
      s = { epoch, offsets: new Set(), order: [], floor: -Infinity };
      this.seen.set(topic, s);
    }
    if (offset <= s.floor || s.offsets.has(offset)) return true;
    s.offsets.add(offset);
    s.order.push(offset);
    if (s.order.length > SEEN_WINDOW) {
      s.order.sort((a, b) => a - b);
      const drop = s.order.splice(0, s.order.length - SEEN_WINDOW);
      for (const o of drop) s.offsets.delete(o);
      s.floor = Math.max(s.floor, drop[drop.length - 1] ?? -Infinity);
    }
    return false;
  }

  // ------------------------------------------------------------ errors

  private reportError(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }

  protected override onListenerError(event: keyof StarlingEvents, err: unknown): void {
    if (event !== "error") this.reportError(err);
  }
}

/** Methods every client answers unless the application registers its own. */
function builtin(method: string): MethodHandler | undefined {
  switch (method) {
    case "system:ping":
      return () => ({ pong: true, timestamp: Date.now() });
    case "system:echo":
      return (payload) => payload;
    default:
      return undefined;
  }
}

function errorBody(err: unknown): wire.ErrorBody {
  if (err instanceof StarlingError) {
    const body: wire.ErrorBody = { code: err.code, message: err.message };
    if (err.details !== undefined) body.details = err.details;
    return body;
  }
  const message = err instanceof Error ? err.message : typeof err === "string" ? err : "method handler failed";
  return { code: ErrorCodes.METHOD_ERROR, message };
}
