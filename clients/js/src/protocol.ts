/**
 * Helios-Starling 1.x wire types, as the Helios server encodes them (JSON
 * text frames, subprotocol `helios-starling.v1.json`).
 */

/** The `protocol` field of every message. */
export const PROTOCOL = "helios-starling";
/** The protocol version this client speaks. */
export const VERSION = "1.0.0";
/** The WebSocket subprotocol offered at the handshake. */
export const SUBPROTOCOL = "helios-starling.v1.json";

/** Names the target of a relayed request or notification. */
export type PeerRef = { id: string } | { name: string };

/** The `error` of a failed response. */
export interface ErrorBody {
  code: string;
  message: string;
  details?: unknown;
}

interface Base {
  protocol: typeof PROTOCOL;
  version: string;
  timestamp: number;
}

/** Calls a method; expects exactly one response. */
export interface RequestMessage extends Base {
  type: "request";
  requestId: string;
  method: string;
  payload?: unknown;
  peer?: PeerRef;
  /** How long the caller waits, in milliseconds. */
  timeout?: number;
}

/** Answers a request. */
export interface ResponseMessage extends Base {
  type: "response";
  requestId?: string;
  success: boolean;
  data?: unknown;
  error?: ErrorBody;
  peer?: PeerRef;
}

/** The body of a notification. */
export interface NotificationBody {
  topic?: string;
  data: unknown;
  /** Position of a room delivery in its room's stream. */
  offset?: number;
  /** Identifies the room stream `offset` counts in. */
  epoch?: string;
  ackId?: string;
}

/** A one-way message. */
export interface NotificationMessage extends Base {
  type: "notification";
  notification: NotificationBody;
  peer?: PeerRef;
}

/** Any message. */
export type Message = RequestMessage | ResponseMessage | NotificationMessage;

/** Topic of the notification the server sends right after the upgrade. */
export const WELCOME_TOPIC = "helios:welcome";
/** Topic of the notification that cancels an in-flight request. */
export const CANCEL_TOPIC = "helios:cancel";

/** Topic of the notification a server sends about an error no response can carry. */
export const ERROR_TOPIC = "helios:error";

/** Topic of the acknowledgement of a reliable notification (one with `ackId`). */
export const ACK_TOPIC = "helios:ack";

/** The welcome's `reason` when the session to recover still has a live connection. */
export const SESSION_HELD_REASON = "the session is still held by a live connection";

/** A position in a room's stream: the `offset` of a delivery and its `epoch`. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** Data of the `helios:welcome` notification. */
export interface Welcome {
  starlingId: string;
  recovered: boolean;
  serverTime?: number;
  /** On recovery: some room's history no longer covered the gap (see `missedRooms`). */
  missed?: boolean;
  /** On recovery: the rooms whose missed messages could not all be replayed. */
  missedRooms?: string[];
  /** On recovery: the rooms the session is in again. */
  rooms?: string[];
  /** On a refused recovery: why. */
  reason?: string;
  [extra: string]: unknown;
}

function base(): Base {
  return { protocol: PROTOCOL, version: VERSION, timestamp: Date.now() };
}

/** Builds a request. */
export function request(
  requestId: string,
  method: string,
  payload: unknown,
  peer: PeerRef | undefined,
  timeout: number | undefined,
): RequestMessage {
  const msg: RequestMessage = { ...base(), type: "request", requestId, method };
  if (payload !== undefined) msg.payload = payload;
  if (peer !== undefined) msg.peer = peer;
  if (timeout !== undefined && Number.isFinite(timeout)) msg.timeout = Math.max(0, Math.floor(timeout));
  return msg;
}

/** Builds a successful response. */
export function success(requestId: string, data: unknown, peer?: PeerRef): ResponseMessage {
  const msg: ResponseMessage = {
    ...base(),
    type: "response",
    requestId,
    success: true,
    data: data === undefined ? null : data,
  };
  if (peer !== undefined) msg.peer = peer;
  return msg;
}

/** Builds a failed response. */
export function failure(requestId: string, error: ErrorBody, peer?: PeerRef): ResponseMessage {
  const msg: ResponseMessage = { ...base(), type: "response", requestId, success: false, error };
  if (peer !== undefined) msg.peer = peer;
  return msg;
}

/** Builds a notification. */
export function notification(topic: string | undefined, data: unknown, peer?: PeerRef): NotificationMessage {
  const body: NotificationBody = { data: data === undefined ? null : data };
  if (topic !== undefined) body.topic = topic;
  const msg: NotificationMessage = { ...base(), type: "notification", notification: body };
  if (peer !== undefined) msg.peer = peer;
  return msg;
}

/** Why a frame was not accepted, with the `requestId` when one was readable. */
export class DecodeError extends Error {
  constructor(
    message: string,
    readonly requestId?: string,
  ) {
    super(message);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses and checks one text frame. Throws a {@link DecodeError}. */
export function decode(text: string): Message {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DecodeError(`frame is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(v)) throw new DecodeError("message must be a JSON object");
  const requestId = typeof v.requestId === "string" ? v.requestId : undefined;
  const fail = (why: string): never => {
    throw new DecodeError(why, requestId);
  };
  if (v.protocol !== PROTOCOL) fail(`field \`protocol\` must be "${PROTOCOL}"`);
  if (typeof v.version !== "string" || !/^1\.\d+\.\d+/.test(v.version)) {
    fail(`unsupported protocol version ${JSON.stringify(v.version)}: this client speaks 1.x`);
  }
  switch (v.type) {
    case "request":
      if (requestId === undefined) fail("missing field `requestId`");
      if (typeof v.method !== "string" || v.method === "") fail("missing field `method`");
      return v as unknown as RequestMessage;
    case "response":
      if (typeof v.success !== "boolean") fail("missing field `success`");
      if (v.success === false && !isObject(v.error)) fail("a failed response must carry `error`");
      return v as unknown as ResponseMessage;
    case "notification":
      if (!isObject(v.notification)) fail("missing field `notification`");
      return v as unknown as NotificationMessage;
    default:
      return fail(`unknown message type ${JSON.stringify(v.type)}`);
  }
}

/** A UUID v4, from `crypto.randomUUID` where available. */
export function uuidv4(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
