/** A listener for an event whose argument has type `T`. */
export type Listener<T> = (arg: T) => void;

/**
 * A tiny typed event emitter: `Events` maps event names to the type of the
 * single argument their listeners receive.
 *
 * A listener that throws does not stop the others; its error is reported
 * through `onListenerError` (the client re-emits it as `error`).
 */
export class Emitter<Events extends Record<string, unknown>> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Set by the owner to learn about listeners that threw. */
  protected onListenerError(_event: keyof Events, _err: unknown): void {}

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, (arg) => {
      off();
      listener(arg);
    });
    return off;
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(listener as Listener<never>);
  }

  /** The number of listeners of an event. */
  listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  /** Calls every listener of `event` with `arg`, in the order they were added. */
  protected emit<K extends keyof Events>(event: K, arg: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(arg);
      } catch (err) {
        this.onListenerError(event, err);
      }
    }
  }
}
