export interface Options {
    minDelay?: number;
    maxDelay?: number;
    offline?: "queue" | "drop" | "error";
    WebSocket?: typeof WebSocket;
}
export interface SubscribeOptions {
    onMessage?: (data: unknown, frame: Record<string, unknown>) => void;
    onError?: (err: Error) => void;
    onUnsubscribe?: (frame: Record<string, unknown>) => void;
    [extra: string]: unknown;
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
    private onFrame;
    private request;
    /** `{jwt}` sends method "jwt": server support arrives with issue 14. */
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
