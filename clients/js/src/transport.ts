/**
 * Finds a WebSocket implementation: the one given in the options, else the
 * global `WebSocket` (browsers, Deno, Bun, Node 22+), else the `ws` package,
 * imported lazily so browser bundles never see it.
 */

/** The subset of the WHATWG WebSocket that the client uses. */
export interface SocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor compatible with the WHATWG one. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => SocketLike;

let wsPackage: Promise<WebSocketConstructor> | undefined;

/** Resolves the WebSocket constructor to use. */
export async function resolveWebSocket(given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given) return given;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === "function") return global;
  wsPackage ??= (async () => {
    // A computed specifier keeps bundlers from trying to resolve `ws`.
    const name = "ws";
    try {
      const mod = (await import(/* @vite-ignore */ /* webpackIgnore: true */ name)) as {
        WebSocket?: WebSocketConstructor;
        default?: WebSocketConstructor;
      };
      const ctor = mod.WebSocket ?? mod.default;
      if (typeof ctor !== "function") throw new Error("the `ws` package exports no WebSocket");
      return ctor;
    } catch (err) {
      wsPackage = undefined;
      throw new Error(
        "no WebSocket implementation: this runtime has no global WebSocket; install the `ws` package " +
          `or pass options.WebSocket (${(err as Error).message})`,
      );
    }
  })();
  return wsPackage;
}

/** Decodes a frame's data to text (JSON frames are text; tolerate binary UTF-8). */
export function frameText(data: unknown): string | undefined {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data as ArrayBufferView);
  return undefined;
}
