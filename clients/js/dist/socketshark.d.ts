export interface Options {
    minDelay?: number;
    maxDelay?: number;
    offline?: "queue" | "drop" | "error";
    connectTimeout?: number;
    WebSocket?: typeof WebSocket;
}
export interface SubscribeOptions {
    onMessage?: (data: unknown, frame: Record<string, unknown>) => void;
    onError?: (err: Error) => void;
    onUnsubscribe?: (frame: Record<string, unknown>) => void;
    /** On a service with history: `true` when a resubscription after a reconnect got every missed
     * message (they arrive through onMessage, in order, before live ones); `false` when some were
     * lost for good (reload the state). */
    onRecover?: (recovered: boolean, frame: Record<string, unknown>) => void;
    [extra: string]: unknown;
}
/** A position in a channel's history (issue 14). */
export interface Position {
    offset: number;
    epoch: string;
}
export declare class SocketSharkError extends Error {
    code?: number | undefined;
    reply?: unknown | undefined;
    constructor(message: string, code?: number | undefined, reply?: unknown | undefined);
}
export declare function closeError(code: number, reason: string): SocketSharkError;
export declare class Subscription {
    client: SocketShark;
    name: string;
    opts: SubscribeOptions;
    active: boolean;
    /** The last history position seen (reply or message); sent as `recover` on resubscription. */
    position?: Position;
    constructor(client: SocketShark, name: string, opts: SubscribeOptions);
    extra(): Record<string, unknown>;
    send(data: unknown): void;
    unsubscribe(): Promise<any>;
}
export declare class SocketShark {
    url: string;
    options: Options;
    ws?: WebSocket;
    private pending;
    private queue;
    private subs;
    private authArgs?;
    private attempts;
    private closed;
    private ctor;
    onClose?: (err: SocketSharkError) => void;
    constructor(url: string, options?: Options);
    private connect;
    /** The next connection attempt, after an exponential backoff with full jitter. */
    private retry;
    private onFrame;
    private request;
    /** `{jwt}` sends method "jwt" (`[authentication.jwt]` on the server). */
    auth(a: {
        ticket?: string;
        jwt?: string;
    }): Promise<any>;
    private subscribeRaw;
    subscribe(name: string, opts?: SubscribeOptions): Promise<Subscription>;
    send(name: string, data: unknown): void;
    unsubscribe(name: string): Promise<any>;
    ping(data?: unknown): Promise<any>;
    close(): void;
}
