// Shared helpers for matrix-js-sdk scenarios run by tests/clients/jsclient.py.
//
// Contract with the Python side:
//   * parameters arrive as one JSON object, in argv[2] or else in env MYELIN_JS_PARAMS;
//   * the whole run is bounded by env MYELIN_JS_TIMEOUT_MS (the scenario's own deadline);
//   * exactly one JSON line goes to stdout: {"ok": true, "result": ...} on success, or
//     {"ok": false, "error": {...}} followed by exit code 1 on failure;
//   * everything else (SDK logging, progress notes from log()) goes to stderr.
//
// A scenario is an .mjs file in scenarios/ whose body is:
//   import { run, makeClient } from "../lib.mjs";
//   await run(async (params) => { ...; return {some: "result"}; });

const DEBUG = Boolean(process.env.MYELIN_JS_DEBUG);

// stdout is reserved for the single result line: send all console output to stderr.
// The SDK logs through console.* (looked up at call time), so this catches it too.
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
console.trace = toStderr;
console.debug = DEBUG ? toStderr : () => {};

/** Fails fast if the scenario was started without `node --require polyfill.cjs`. */
export function requirePolyfill() {
    if (typeof Promise.withResolvers !== "function") {
        throw new Error(
            "Promise.withResolvers is missing: run node with --require tests/js/polyfill.cjs",
        );
    }
}

// Check before the SDK is even loaded (it may use Promise.withResolvers at import time).
try {
    requirePolyfill();
} catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: { message: e.message } }) + "\n");
    process.exit(1);
}

export const sdk = await import("matrix-js-sdk");

/** Progress notes for humans; they end up in the failure message on the Python side. */
export function log(...args) {
    const stamp = new Date().toISOString().slice(11, 23);
    console.error(`[${stamp}]`, ...args);
}

/** The scenario's parameters: JSON from argv[2], or env MYELIN_JS_PARAMS, or {}. */
export function params() {
    const raw = process.argv[2] ?? process.env.MYELIN_JS_PARAMS ?? "{}";
    const value = JSON.parse(raw);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new Error("scenario parameters must be a JSON object");
    }
    return value;
}

/** Throws a descriptive error unless `cond` holds. For preconditions inside scenarios. */
export function check(cond, message, details) {
    if (!cond) {
        const error = new Error(`check failed: ${message}`);
        error.details = details;
        throw error;
    }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with "timed out: <what>" if `promise` has not settled within `ms`. */
export function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the listener's arguments (as an array) the first time `emitter` emits
 * `event` with arguments for which `predicate(...args)` is truthy. Set the wait up
 * *before* triggering the action that should cause the event.
 */
export function waitForEvent(emitter, event, predicate = () => true, ms = 15000, what = event) {
    let listener;
    const seen = new Promise((resolve, reject) => {
        listener = (...args) => {
            try {
                if (predicate(...args)) resolve(args);
            } catch (e) {
                reject(e);
            }
        };
        emitter.on(event, listener);
    });
    return withTimeout(seen, ms, what).finally(() => emitter.removeListener(event, listener));
}

const clients = new Set();

/**
 * A MatrixClient for `baseUrl`, optionally authenticated ({userId, accessToken, deviceId}).
 * Extra options are passed to sdk.createClient. Clients are stopped when the scenario ends.
 */
export function makeClient({ baseUrl, userId, accessToken, deviceId, ...extra }) {
    check(typeof baseUrl === "string" && baseUrl, "makeClient needs a baseUrl");
    const client = sdk.createClient({
        baseUrl,
        userId,
        accessToken,
        deviceId,
        timelineSupport: true,
        ...extra,
    });
    clients.add(client);
    return client;
}

/**
 * startClient() and wait until the first sync has been processed (SyncState "PREPARED").
 * Rejects as soon as the SDK reports a sync ERROR, with the underlying error attached.
 */
export async function startAndSync(client, opts = {}, ms = 20000) {
    const ready = waitForEvent(
        client,
        sdk.ClientEvent.Sync,
        (state, _prev, data) => {
            if (state === "ERROR") {
                const error = new Error(`sync failed for ${client.getUserId()}`);
                error.cause = data?.error;
                throw error;
            }
            return state === "PREPARED";
        },
        ms,
        `initial sync of ${client.getUserId()}`,
    );
    await client.startClient({ initialSyncLimit: 20, ...opts });
    await ready;
}

/** A JSON-safe description of an error, keeping the Matrix errcode / HTTP status if any. */
export function describeError(e) {
    if (!(e instanceof Error)) return { message: String(e) };
    const out = { name: e.name, message: e.message };
    if (e.errcode !== undefined) out.errcode = e.errcode;
    if (e.httpStatus !== undefined) out.httpStatus = e.httpStatus;
    if (e.data !== undefined) out.data = e.data;
    if (e.url !== undefined) out.url = String(e.url);
    if (e.details !== undefined) out.details = e.details;
    if (e.cause !== undefined) out.cause = describeError(e.cause);
    if (e.stack) out.stack = e.stack.split("\n").slice(0, 12).join("\n");
    return out;
}

/**
 * Runs `call`; if it rejects, returns {errcode, httpStatus, message} instead of throwing.
 * If it resolves, returns {ok: value}. For steps that are *expected* to fail.
 */
export async function outcome(call) {
    try {
        return { ok: await call() };
    } catch (e) {
        const { errcode, httpStatus, message } = describeError(e);
        return { errcode: errcode ?? null, httpStatus: httpStatus ?? null, message };
    }
}

function emit(line) {
    return new Promise((resolve) => process.stdout.write(JSON.stringify(line) + "\n", resolve));
}

let finished = false;

async function finish(line, code) {
    if (finished) return;
    finished = true;
    for (const client of clients) {
        try {
            client.stopClient();
        } catch {
            // best effort: we are exiting anyway
        }
    }
    await emit(line);
    process.exit(code);
}

function fail(e) {
    console.error(e);
    return finish({ ok: false, error: describeError(e) }, 1);
}

/**
 * The scenario entry point: checks the polyfill, parses parameters, bounds the run with
 * MYELIN_JS_TIMEOUT_MS (default 50 s), prints the result line, stops clients and exits.
 */
export async function run(main) {
    const budget = Number(process.env.MYELIN_JS_TIMEOUT_MS || 50000);
    const timer = setTimeout(
        () => fail(new Error(`scenario timed out after ${budget} ms`)),
        budget,
    );
    process.on("unhandledRejection", (e) => fail(e));
    process.on("uncaughtException", (e) => fail(e));
    try {
        requirePolyfill();
        const result = await main(params());
        clearTimeout(timer);
        await finish({ ok: true, result: result ?? null }, 0);
    } catch (e) {
        clearTimeout(timer);
        await fail(e);
    }
}
