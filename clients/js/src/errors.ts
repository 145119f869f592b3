/**
 * Error codes a {@link StarlingError} can carry.
 *
 * Codes sent by the server (or by a peer the server relayed to) are passed
 * through unchanged, so the set is open: compare with these constants, but
 * expect other strings too (an application's own codes).
 */
export const ErrorCodes = {
  // The five codes of the Helios-Starling specification.
  INVALID_MESSAGE_FORMAT: "INVALID_MESSAGE_FORMAT",
  METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
  METHOD_ERROR: "METHOD_ERROR",
  REQUEST_TIMEOUT: "REQUEST_TIMEOUT",
  REQUEST_CANCELLED: "REQUEST_CANCELLED",
  // Helios server codes.
  UNAUTHORIZED: "UNAUTHORIZED",
  FORBIDDEN: "FORBIDDEN",
  PEER_NOT_FOUND: "PEER_NOT_FOUND",
  RATE_LIMITED: "RATE_LIMITED",
  PAYLOAD_TOO_LARGE: "PAYLOAD_TOO_LARGE",
  TOO_MANY_REQUESTS: "TOO_MANY_REQUESTS",
  INVALID_PAYLOAD: "INVALID_PAYLOAD",
  SHUTTING_DOWN: "SHUTTING_DOWN",
  NAME_TAKEN: "NAME_TAKEN",
  BROKER_UNAVAILABLE: "BROKER_UNAVAILABLE",
  // Raised by this client itself, never sent on the wire.
  /** No connection: `connect()` was never called, or `close()` was. */
  NOT_CONNECTED: "NOT_CONNECTED",
  /** The socket could not be opened, or no welcome arrived in time. */
  CONNECTION_FAILED: "CONNECTION_FAILED",
  /** The socket closed while the request was in flight. */
  CONNECTION_CLOSED: "CONNECTION_CLOSED",
  /** Too many messages waiting for a reconnection. */
  QUEUE_FULL: "QUEUE_FULL",
} as const;

/** One of the well-known codes, or any other string a server or peer sent. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes] | (string & {});

/**
 * The error every failed Starling operation rejects with.
 *
 * `code` is the protocol error code: the server's code unchanged for an error
 * response, `REQUEST_TIMEOUT` when the local timeout fired,
 * `REQUEST_CANCELLED` when the caller's `AbortSignal` aborted.
 *
 * A method handler may also throw a `StarlingError` to answer with its own
 * code instead of `METHOD_ERROR`.
 */
export class StarlingError extends Error {
  /** The protocol error code. */
  readonly code: ErrorCode;
  /** Structured details from the error response, if any. */
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = "StarlingError";
    this.code = code;
    this.details = details;
  }
}
