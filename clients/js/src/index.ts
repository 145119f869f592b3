/**
 * Starling: the client of the Helios real-time server, for browsers and Node.
 *
 * ```ts
 * import { Starling } from "@helios/starling";
 * const client = new Starling("ws://127.0.0.1:7700/ws");
 * await client.connect();
 * await client.subscribe("chat:lobby", (msg) => console.log(msg));
 * await client.publish("chat:lobby", { text: "hello" });
 * ```
 *
 * @packageDocumentation
 */
export { Starling } from "./starling.js";
export type {
  StarlingOptions,
  StarlingEvents,
  StarlingState,
  RequestOptions,
  NotifyOptions,
  ReliableOptions,
  MethodContext,
  MethodHandler,
  TopicHandler,
  NotificationEvent,
  ConnectedEvent,
  DisconnectedEvent,
  RecoveredEvent,
} from "./starling.js";
export { StarlingError, ErrorCodes } from "./errors.js";
export { StreamWriter, IncomingStream, STREAM_WINDOW, MAX_CHUNK_BYTES } from "./streams.js";
export type { StreamInfo } from "./streams.js";
export type { ErrorCode } from "./errors.js";
export { Emitter } from "./emitter.js";
export type { Listener } from "./emitter.js";
export { PROTOCOL, VERSION, SUBPROTOCOL, WELCOME_TOPIC, CANCEL_TOPIC, ERROR_TOPIC, ACK_TOPIC, SESSION_HELD_REASON } from "./protocol.js";
export type {
  PeerRef,
  ErrorBody,
  Message,
  RequestMessage,
  ResponseMessage,
  NotificationMessage,
  NotificationBody,
  Welcome,
  StreamPosition,
} from "./protocol.js";
export type { WebSocketConstructor, SocketLike } from "./transport.js";
