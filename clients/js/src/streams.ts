/**
 * Streams (the `stream:*` notifications, docs/protocol.md "Streams"):
 * ordered chunks of binary data tied to a request, with end, abort, stop
 * and credit-based flow control. A file is a stream with a name and size.
 */
import { ErrorCodes, StarlingError } from "./errors.js";

/** Chunks a sender may have in flight before the receiver credits them. */
export const STREAM_WINDOW = 16;
/** Largest chunk in bytes (before base64): writes are cut to it. */
export const MAX_CHUNK_BYTES = 48 * 1024;
/** Streams opened by the server and not taken yet, at most. */
const MAX_UNCLAIMED = 32;

/** What a stream carries, told when it opens. */
export interface StreamInfo {
  /** A file name, or any label. */
  name?: string;
  /** The total size in bytes, when known. */
  size?: number;
}

/** Sends one stream frame now; `false` when there is no open socket. */
export type StreamSend = (topic: string, data: Record<string, unknown>) => boolean;

const STREAM_ERROR = "STREAM_ERROR";

function streamError(message: string): StarlingError {
  return new StarlingError(STREAM_ERROR, message);
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function toBytes(data: Uint8Array | ArrayBuffer | string): Uint8Array {
  if (typeof data === "string") return new TextEncoder().encode(data);
  return data instanceof Uint8Array ? data : new Uint8Array(data);
}

/** A stream to the server: `write`, then `end`. Writes wait for credit. */
export class StreamWriter {
  private credit = STREAM_WINDOW;
  private seq = 0;
  private failed: StarlingError | null = null;
  private finished = false;
  private wake: (() => void) | null = null;
  /** Writes run one after the other; `end()` waits for them. */
  private queue: Promise<void> = Promise.resolve();

  /** @internal */
  constructor(
    readonly id: string,
    private readonly send: StreamSend,
    private readonly forget: (id: string) => void,
  ) {}

  /** Sends `data`, cut into chunks, each once the server has room for it. */
  write(data: Uint8Array | ArrayBuffer | string): Promise<void> {
    if (this.finished && !this.failed) return Promise.reject(streamError("the stream was already ended or aborted"));
    const bytes = toBytes(data);
    const run = this.queue.then(() => this.writeNow(bytes));
    this.queue = run.catch(() => {});
    return run;
  }

  private async writeNow(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length; at += MAX_CHUNK_BYTES) {
      while (this.credit === 0 && !this.failed) {
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
      if (this.failed) throw this.failed;
      this.credit--;
      const piece = bytes.subarray(at, Math.min(at + MAX_CHUNK_BYTES, bytes.length));
      if (!this.send("stream:chunk", { streamId: this.id, seq: this.seq, data: toBase64(piece) })) {
        this.fail(new StarlingError(ErrorCodes.CONNECTION_CLOSED, "the connection closed before the stream ended"));
        throw this.failed;
      }
      this.seq++;
    }
  }

  /** Ends the stream once every write went out: everything was sent. */
  async end(): Promise<void> {
    if (this.finished && !this.failed) throw streamError("the stream was already ended or aborted");
    this.finished = true;
    await this.queue;
    if (this.failed) throw this.failed;
    this.forget(this.id);
    if (!this.send("stream:end", { streamId: this.id })) {
      throw new StarlingError(ErrorCodes.CONNECTION_CLOSED, "the connection closed before the stream ended");
    }
  }

  /** Gives up on the stream (pending writes reject); the server's reader gets an error. */
  abort(reason = "aborted by the client"): void {
    if (this.failed) return;
    this.finished = true;
    this.fail(streamError(`stream aborted by the client: ${reason}`));
    this.send("stream:abort", { streamId: this.id, reason });
  }

  /** @internal */
  addCredit(chunks: number): void {
    this.credit += chunks;
    this.wake?.();
    this.wake = null;
  }

  /** @internal */
  fail(err: StarlingError): void {
    this.failed ??= err;
    this.forget(this.id);
    this.wake?.();
    this.wake = null;
  }
}

type Item = { chunk: Uint8Array } | { end: true } | { error: StarlingError };

/** A stream from the server: read it with `next()`, `readAll()` or `for await`. */
export class IncomingStream implements AsyncIterable<Uint8Array> {
  private readonly queue: Item[] = [];
  private wake: (() => void) | null = null;
  private done = false;
  private unreadCredit = 0;
  /** @internal chunks queued and not read yet */
  queued = 0;

  /** @internal */
  constructor(
    readonly id: string,
    readonly info: StreamInfo,
    private readonly send: StreamSend,
    private readonly forget: (id: string) => void,
  ) {}

  /** The name the server gave (a file name). */
  get name(): string | undefined {
    return this.info.name;
  }

  /** The size the server announced. */
  get size(): number | undefined {
    return this.info.size;
  }

  /** The next chunk; `null` at the end. Rejects with `STREAM_ERROR` or `CONNECTION_CLOSED`. */
  async next(): Promise<Uint8Array | null> {
    for (;;) {
      const item = this.queue.shift();
      if (item === undefined) {
        if (this.done) return null;
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      if ("chunk" in item) {
        this.queued--;
        if (++this.unreadCredit >= STREAM_WINDOW / 2) {
          this.send("stream:credit", { streamId: this.id, chunks: this.unreadCredit });
          this.unreadCredit = 0;
        }
        return item.chunk;
      }
      this.done = true;
      if ("end" in item) return null;
      throw item.error;
    }
  }

  /** Reads the whole stream; past `limit` bytes it stops the stream and rejects. */
  async readAll(limit = 64 * 1024 * 1024): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let chunk = await this.next(); chunk !== null; chunk = await this.next()) {
      total += chunk.length;
      if (total > limit) {
        this.stop(`more than ${limit} bytes`);
        throw streamError(`stream stopped by the client: more than ${limit} bytes`);
      }
      parts.push(chunk);
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Refuses the rest of the stream (`stream:stop`). */
  stop(reason = "stopped by the client"): void {
    if (this.done) return;
    this.done = true;
    this.forget(this.id);
    this.queue.length = 0;
    this.send("stream:stop", { streamId: this.id, reason });
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (let chunk = await this.next(); chunk !== null; chunk = await this.next()) yield chunk;
  }

  /** @internal */
  push(item: Item): void {
    if (this.done) return;
    if ("chunk" in item) this.queued++;
    this.queue.push(item);
    this.wake?.();
    this.wake = null;
  }
}

interface Waiter {
  resolve: (s: IncomingStream) => void;
  reject: (e: StarlingError) => void;
}

/** One connection's streams, both ways. @internal */
export class StreamTable {
  private readonly incoming = new Map<string, { stream: IncomingStream; nextSeq: number }>();
  private readonly outgoing = new Map<string, StreamWriter>();
  private readonly unclaimed = new Map<string, IncomingStream[]>();
  private readonly waiting = new Map<string, Waiter>();
  private nextId = 0;

  constructor(private readonly send: StreamSend) {}

  /** Opens a stream to the server for `requestId`. */
  open(requestId: string, info: StreamInfo): StreamWriter {
    const id = `js-${Date.now().toString(36)}-${(this.nextId++).toString(36)}`;
    const writer = new StreamWriter(id, this.send, (sid) => this.outgoing.delete(sid));
    this.outgoing.set(id, writer);
    const data: Record<string, unknown> = { streamId: id, requestId };
    if (info.name !== undefined) data.name = info.name;
    if (info.size !== undefined) data.size = info.size;
    if (!this.send("stream:open", data)) {
      writer.fail(new StarlingError(ErrorCodes.CONNECTION_CLOSED, "not connected"));
    }
    return writer;
  }

  /** The stream the server opened for `requestId`, waiting for it while the request is open. */
  take(requestId: string, stillPending: boolean): Promise<IncomingStream> {
    const queued = this.unclaimed.get(requestId);
    const first = queued?.shift();
    if (queued && queued.length === 0) this.unclaimed.delete(requestId);
    if (first) return Promise.resolve(first);
    if (!stillPending) return Promise.reject(streamError("no stream was opened for this request"));
    return new Promise((resolve, reject) => this.waiting.set(requestId, { resolve, reject }));
  }

  /**
   * The answer to `requestId` came: a stream still waited for will not
   * come, and one nobody asked for (a plain `request()`, whose caller
   * cannot take it: `requestWithStream` asks at once) is stopped.
   */
  answered(requestId: string): void {
    const w = this.waiting.get(requestId);
    if (w) {
      this.waiting.delete(requestId);
      w.reject(streamError("no stream was opened for this request"));
    }
    const unwanted = this.unclaimed.get(requestId);
    if (unwanted) {
      this.unclaimed.delete(requestId);
      for (const stream of unwanted) stream.stop("the client did not ask for this stream");
    }
  }

  /** Every stream fails (the socket closed). */
  failAll(err: StarlingError): void {
    for (const { stream } of this.incoming.values()) stream.push({ error: err });
    this.incoming.clear();
    for (const w of [...this.outgoing.values()]) w.fail(err);
    this.outgoing.clear();
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
    for (const list of this.unclaimed.values()) for (const s of list) s.push({ error: err });
    this.unclaimed.clear();
  }

  /** A `stream:*` notification from the server. */
  onFrame(topic: string, data: unknown, isPending: (requestId: string) => boolean): void {
    const d = (data ?? {}) as Record<string, unknown>;
    const streamId = typeof d.streamId === "string" ? d.streamId : undefined;
    if (streamId === undefined) return;
    const stop = (reason: string) => this.send("stream:stop", { streamId, reason });
    switch (topic) {
      case "stream:open": {
        const requestId = typeof d.requestId === "string" ? d.requestId : "";
        if (this.incoming.has(streamId)) return void stop("a stream with this streamId is already open");
        if (!isPending(requestId)) return void stop("no request with this requestId is in flight");
        let count = 0;
        for (const list of this.unclaimed.values()) count += list.length;
        if (count >= MAX_UNCLAIMED) return void stop("too many streams opened and not taken");
        const info: StreamInfo = {};
        if (typeof d.name === "string") info.name = d.name;
        if (typeof d.size === "number") info.size = d.size;
        const stream = new IncomingStream(streamId, info, this.send, (sid) => this.incoming.delete(sid));
        this.incoming.set(streamId, { stream, nextSeq: 0 });
        const w = this.waiting.get(requestId);
        if (w) {
          this.waiting.delete(requestId);
          w.resolve(stream);
        } else {
          const list = this.unclaimed.get(requestId) ?? [];
          list.push(stream);
          this.unclaimed.set(requestId, list);
        }
        return;
      }
      case "stream:chunk": {
        const entry = this.incoming.get(streamId);
        if (!entry) return void stop("no such stream (never opened, or closed by the receiver)");
        let problem: string | null = null;
        let bytes: Uint8Array | null = null;
        if (d.seq !== entry.nextSeq) problem = `chunk ${String(d.seq)} out of order (expected ${entry.nextSeq})`;
        else if (entry.stream.queued >= STREAM_WINDOW) problem = `flow control: more than ${STREAM_WINDOW} chunks sent without credit`;
        else {
          try {
            bytes = fromBase64(typeof d.data === "string" ? d.data : "");
            if (bytes.length > MAX_CHUNK_BYTES) problem = `a chunk holds at most ${MAX_CHUNK_BYTES} bytes, got ${bytes.length}`;
          } catch {
            problem = "chunk data is not base64";
          }
        }
        if (problem !== null || bytes === null) {
          this.incoming.delete(streamId);
          entry.stream.push({ error: streamError(`stream stopped by the client: ${problem ?? "bad chunk"}`) });
          return void stop(problem ?? "bad chunk");
        }
        entry.nextSeq++;
        entry.stream.push({ chunk: bytes });
        return;
      }
      case "stream:end":
      case "stream:abort": {
        const entry = this.incoming.get(streamId);
        if (!entry) return;
        this.incoming.delete(streamId);
        const reason = typeof d.reason === "string" ? d.reason : "";
        entry.stream.push(topic === "stream:end" ? { end: true } : { error: streamError(`stream aborted by the sender: ${reason}`) });
        return;
      }
      case "stream:credit": {
        const chunks = typeof d.chunks === "number" && d.chunks > 0 ? Math.min(d.chunks, 1 << 20) : 0;
        this.outgoing.get(streamId)?.addCredit(chunks);
        return;
      }
      case "stream:stop": {
        const reason = typeof d.reason === "string" ? d.reason : "";
        this.outgoing.get(streamId)?.fail(streamError(`stream stopped by the receiver: ${reason}`));
        return;
      }
      default:
        return;
    }
  }
}
