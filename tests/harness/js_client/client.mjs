// An Element-grade Matrix client for the integration tests: matrix-js-sdk with its Rust crypto
// (the wasm build of matrix-sdk-crypto that Element Web uses), driven over stdin/stdout.
//
// Protocol (see tests/harness/js_client.py): newline-delimited JSON.
//   stdout, once the SDK is loaded:  {"event": "ready", "sdkVersion": "...", "cryptoVersion": "..."}
//   stdin, one request per line:     {"id": n, "op": "...", ...args}
//   stdout, one response per line:   {"id": n, "ok": true, ...result} | {"id": n, "ok": false, "error": "..."}
// Requests are handled concurrently (a slow wait_message does not block a send_text); responses
// may therefore come out of order: match them by id. Nothing else is written to stdout: timeline
// events are buffered here (see the `events` op), and every log line of the SDK, ours included,
// goes to stderr.
//
// Ops: start, set_isolation, create_room, join, wait_membership, send_text, wait_message, device_info,
// user_identity, own_status, events, stop. Their arguments are documented at each handler below.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

// -- stdout belongs to the protocol: every console method writes to stderr ----------------------
// The SDK (its loggers, and the Rust crypto's tracing) logs through console.*; JS_CLIENT_LOG_LEVEL
// (trace|debug|info|warn|error|silent, default warn) filters here, as the SDK's child loggers keep
// their own levels.
const LEVELS = { trace: 0, debug: 1, info: 2, log: 2, warn: 3, error: 4, silent: 5 };
const LOG_LEVEL = process.env.JS_CLIENT_LOG_LEVEL || "warn";
const threshold = LEVELS[LOG_LEVEL] ?? LEVELS.warn;
for (const name of ["log", "info", "debug", "trace", "warn", "error"]) {
    console[name] =
        LEVELS[name] >= threshold
            ? (...args) => process.stderr.write(`[${name}] ` + args.map(formatLogArg).join(" ") + "\n")
            : () => {};
}
function formatLogArg(arg) {
    if (typeof arg === "string") return arg;
    if (arg instanceof Error) return arg.stack || String(arg);
    try {
        return JSON.stringify(arg);
    } catch {
        return String(arg);
    }
}

// -- Node 20: matrix-js-sdk 43 declares node >= 22; the only newer API it uses is this one ------
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

// Loaded only now: static imports would run before the polyfill.
const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const versionOf = (name) =>
    JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
const SDK_VERSION = versionOf("matrix-js-sdk");
const CRYPTO_VERSION = versionOf("@matrix-org/matrix-sdk-crypto-wasm");

const { ClientEvent, RoomEvent, MatrixEventEvent, Preset, Visibility, EventType, MsgType } = sdk;
const { AllDevicesIsolationMode, OnlySignedDevicesIsolationMode, EventShieldColour, EventShieldReason } =
    cryptoApi;

function write(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

function errorText(err) {
    if (err === null || err === undefined) return "unknown error";
    if (err instanceof Error) {
        const parts = [];
        if (err.name && err.name !== "Error") parts.push(err.name + ":");
        parts.push(err.message || String(err));
        if (err.errcode) parts.push(`(${err.errcode}, HTTP ${err.httpStatus})`);
        if (err.data && err.data.error && !String(err.message).includes(err.data.error)) {
            parts.push(`- ${err.data.error}`);
        }
        if (err.devices) parts.push(`devices: ${JSON.stringify(err.devices)}`);
        return parts.join(" ");
    }
    return typeof err === "string" ? err : JSON.stringify(err);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- state -----------------------------------------------------------------------------------------

let client = null;
let crypto = null;
/** Every live timeline event, in arrival order (the MatrixEvent objects: they change in place when
 * decrypted or when a local echo gets its real id). */
const timeline = [];
/** When each event was first seen undecryptable (for wait_message's grace period). */
const failedAt = new WeakMap();
let waiters = [];
let syncState = null;
let syncError = null;
let syncErrcode = null;
// Sync errors the SDK would retry forever: fail start at once instead.
const FATAL_SYNC_ERRCODES = new Set(["M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_FORBIDDEN", "M_USER_DEACTIVATED"]);

function notify() {
    const current = waiters;
    waiters = [];
    for (const resolve of current) resolve();
}

/** Resolve when `check()` returns something other than undefined; re-checked on every change. */
async function waitFor(check, timeoutMs, describe) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const result = await check();
        if (result !== undefined) return result;
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
        }
        // Woken by a change, or after a short while anyway (some states change without an event).
        await new Promise((resolve) => {
            waiters.push(resolve);
            setTimeout(resolve, Math.min(remaining, 250));
        });
    }
}

function requireClient() {
    if (!client) throw new Error("not started: send a start request first");
    return client;
}

function summary(ev) {
    const content = ev.getContent() || {};
    let detail = "";
    if (ev.isDecryptionFailure()) detail = `(undecryptable: ${ev.decryptionFailureReason})`;
    else if (ev.getType() === "m.room.message") detail = `${content.msgtype} ${JSON.stringify(content.body)}`;
    else if (ev.getType() === "m.room.member") detail = `${ev.getStateKey()} -> ${content.membership}`;
    const enc = ev.isEncrypted() ? " [encrypted]" : "";
    return `${ev.getId()} ${ev.getType()}${enc} from ${ev.getSender()} ${detail}`.trim();
}

function describeEvent(ev, encryptionInfo) {
    const clear = ev.getClearContent();
    const content = ev.isEncrypted() ? clear : ev.getContent();
    const relatesTo = ev.getWireContent()["m.relates_to"] ?? (content && content["m.relates_to"]) ?? null;
    return {
        eventId: ev.getId(),
        roomId: ev.getRoomId(),
        sender: ev.getSender(),
        type: ev.getType(),
        wireType: ev.getWireType(),
        encrypted: ev.isEncrypted(),
        decryptionFailure: ev.isDecryptionFailure(),
        decryptionFailureReason: ev.decryptionFailureReason ?? null,
        content: ev.isDecryptionFailure() ? null : content,
        relatesTo,
        megolmSessionId: ev.isEncrypted() ? (ev.getWireContent().session_id ?? null) : null,
        originServerTs: ev.getTs(),
        encryptionInfo,
    };
}

async function encryptionInfoOf(ev) {
    if (!ev.isEncrypted() || ev.isDecryptionFailure()) return null;
    try {
        const info = await crypto.getEncryptionInfoForEvent(ev);
        if (!info) return null;
        return {
            shieldColour: EventShieldColour[info.shieldColour] ?? info.shieldColour,
            shieldReason:
                info.shieldReason === null ? null : (EventShieldReason[info.shieldReason] ?? info.shieldReason),
        };
    } catch (err) {
        return { error: errorText(err) };
    }
}

// -- ops -------------------------------------------------------------------------------------------

const ops = {};

/** start {homeserver, userId, accessToken, deviceId, password?, crossSigning?, timeoutMs?}
 * Creates the client, initialises the Rust crypto with an in-memory store (keys are lost when
 * the process ends), starts syncing and waits for the first sync (PREPARED). With `password`
 * (and crossSigning not false) it then bootstraps cross-signing for the user, authenticating the
 * key upload with the password, so this device is signed by its owner's self-signing key.
 * -> {userId, deviceId, deviceKeys, crossSigning: {...own_status}, timings: {...ms}} */
ops.start = async (args) => {
    if (client) throw new Error("already started");
    const t0 = Date.now();
    const timeoutMs = args.timeoutMs ?? 30000;
    client = sdk.createClient({
        baseUrl: args.homeserver,
        userId: args.userId,
        accessToken: args.accessToken,
        deviceId: args.deviceId,
        timelineSupport: false,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    crypto = client.getCrypto();
    const tCrypto = Date.now();

    client.on(RoomEvent.Timeline, (ev, _room, toStartOfTimeline, _removed, data) => {
        if (toStartOfTimeline || (data && data.liveEvent === false)) return;
        timeline.push(ev);
        notify();
    });
    client.on(MatrixEventEvent.Decrypted, (ev) => {
        if (ev.isDecryptionFailure() && !failedAt.has(ev)) failedAt.set(ev, Date.now());
        notify();
    });
    client.on(RoomEvent.MyMembership, () => notify());
    client.on(ClientEvent.Sync, (state, _prev, data) => {
        syncState = state;
        if (state === "ERROR" && data && data.error) {
            syncError = errorText(data.error);
            syncErrcode = data.error.errcode ?? null;
        }
        notify();
    });

    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
    await waitFor(
        () => {
            if (syncState === "PREPARED" || syncState === "SYNCING") return true;
            if (syncState === "ERROR" && FATAL_SYNC_ERRCODES.has(syncErrcode)) {
                client.stopClient();
                throw new Error(`the first sync failed: ${syncError}`);
            }
            return undefined;
        },
        timeoutMs,
        () => `the first sync (state ${syncState}, last error ${syncError})`,
    );
    const tSync = Date.now();

    let crossSigningError = null;
    if (args.password && args.crossSigning !== false) {
        try {
            await bootstrapCrossSigning(args.password);
        } catch (err) {
            crossSigningError = errorText(err);
        }
    }
    const tCross = Date.now();
    const keys = await crypto.getOwnDeviceKeys();
    const status = await ownStatus();
    if (crossSigningError) {
        throw new Error(`cross-signing bootstrap failed: ${crossSigningError}`);
    }
    return {
        userId: client.getUserId(),
        deviceId: client.getDeviceId(),
        deviceKeys: { ed25519: keys.ed25519, curve25519: keys.curve25519 },
        crossSigning: status,
        timings: {
            initCryptoMs: tCrypto - t0,
            firstSyncMs: tSync - tCrypto,
            crossSigningMs: tCross - tSync,
            totalMs: Date.now() - t0,
        },
    };
};

async function bootstrapCrossSigning(password) {
    const userId = client.getUserId();
    await crypto.bootstrapCrossSigning({
        // Called with a function making the upload; as Element does, try without auth first
        // (Synapse lets a user upload their first cross-signing keys without UIA), then with the
        // password in the session the 401 started.
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
            } catch (err) {
                const session = err && err.data && err.data.session;
                if (!session || err.httpStatus !== 401) throw err;
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: userId },
                    password,
                    session,
                });
            }
        },
    });
    // The signature of our own device is uploaded in the background: wait until we see it.
    await waitFor(
        async () => {
            const status = await crypto.getDeviceVerificationStatus(userId, client.getDeviceId());
            return status && status.signedByOwner ? true : undefined;
        },
        15000,
        () => "our own device to be signed by our self-signing key",
    );
}

async function ownStatus() {
    const userId = client.getUserId();
    const status = await crypto.getCrossSigningStatus();
    const device = await crypto.getDeviceVerificationStatus(userId, client.getDeviceId());
    return {
        ready: await crypto.isCrossSigningReady(),
        publicKeysOnDevice: status.publicKeysOnDevice,
        privateKeysCachedLocally: status.privateKeysCachedLocally,
        masterKey: await crypto.getCrossSigningKeyId(cryptoApi.CrossSigningKey.Master),
        deviceSignedByOwner: Boolean(device && device.signedByOwner),
        deviceCrossSigningVerified: Boolean(device && device.crossSigningVerified),
    };
}

/** own_status {} -> {ready, publicKeysOnDevice, privateKeysCachedLocally, masterKey,
 * deviceSignedByOwner, deviceCrossSigningVerified} */
ops.own_status = async () => {
    requireClient();
    return ownStatus();
};

/** set_isolation {mode: "all" | "only_cross_signed", errorOnVerifiedUserProblems?: bool}
 * "all" = AllDevicesIsolationMode(errorOnVerifiedUserProblems, default false): keys are shared with
 * every device (Element's default). "only_cross_signed" = OnlySignedDevicesIsolationMode
 * (Element's "exclude insecure devices"): keys go only to devices cross-signed by their owner, and
 * only events from such devices are decrypted. -> {mode} */
ops.set_isolation = async (args) => {
    requireClient();
    let mode;
    if (args.mode === "all") mode = new AllDevicesIsolationMode(Boolean(args.errorOnVerifiedUserProblems));
    else if (args.mode === "only_cross_signed") mode = new OnlySignedDevicesIsolationMode();
    else throw new Error(`unknown isolation mode ${JSON.stringify(args.mode)} (all | only_cross_signed)`);
    crypto.setDeviceIsolationMode(mode);
    return { mode: args.mode };
};

async function waitRoomJoined(roomId, encrypted, timeoutMs) {
    await waitFor(
        async () => {
            const room = client.getRoom(roomId);
            if (!room || room.getMyMembership() !== "join") return undefined;
            if (encrypted && !(await crypto.isEncryptionEnabledInRoom(roomId))) return undefined;
            return true;
        },
        timeoutMs,
        () => `room ${roomId} to be joined in our sync${encrypted ? " and encrypted" : ""}`,
    );
}

/** create_room {invite?: [userId], isDirect?: bool, encrypted?: bool, name?: string, timeoutMs?}
 * A private room (trusted_private_chat preset when direct, as Element does), with
 * m.room.encryption (megolm) in the initial state when encrypted; for a DM, m.direct account data
 * is updated too. Returns once our sync has the room (and knows it is encrypted). -> {roomId} */
ops.create_room = async (args) => {
    requireClient();
    const invite = args.invite || [];
    const options = {
        visibility: Visibility.Private,
        preset: args.isDirect ? Preset.TrustedPrivateChat : Preset.PrivateChat,
        invite,
        is_direct: Boolean(args.isDirect),
        initial_state: [],
    };
    if (args.name) options.name = args.name;
    if (args.encrypted) {
        options.initial_state.push({
            type: "m.room.encryption",
            state_key: "",
            content: { algorithm: "m.megolm.v1.aes-sha2" },
        });
    }
    const { room_id: roomId } = await client.createRoom(options);
    if (args.isDirect && invite.length > 0) {
        const direct = client.getAccountData(EventType.Direct)?.getContent() ?? {};
        for (const userId of invite) direct[userId] = [...(direct[userId] ?? []), roomId];
        await client.setAccountData(EventType.Direct, direct);
    }
    await waitRoomJoined(roomId, Boolean(args.encrypted), args.timeoutMs ?? 15000);
    return { roomId };
};

/** join {roomId, timeoutMs?} -> {roomId} once our sync shows us joined. */
ops.join = async (args) => {
    requireClient();
    const room = await client.joinRoom(args.roomId);
    await waitRoomJoined(room.roomId, false, args.timeoutMs ?? 15000);
    return { roomId: room.roomId };
};

/** wait_membership {roomId, userId, membership?: "join", timeoutMs?} -> {membership} once this
 * client's view of the room has userId with that membership (e.g. before sending to a new member:
 * room keys go only to the members this client knows of). */
ops.wait_membership = async (args) => {
    requireClient();
    const membership = args.membership || "join";
    await waitFor(
        () => (client.getRoom(args.roomId)?.getMember(args.userId)?.membership === membership ? true : undefined),
        args.timeoutMs ?? 15000,
        () =>
            `${args.userId} to be ${membership} in ${args.roomId} (now: ` +
            `${client.getRoom(args.roomId)?.getMember(args.userId)?.membership ?? "unknown"})`,
    );
    return { membership };
};

/** send_text {roomId, body, msgtype?: "m.text", formattedBody?, extraContent?}
 * Encrypted automatically in an encrypted room. A failure (e.g. the device-isolation mode refusing
 * to share the room key) is an ok:false response with the SDK's error text. -> {eventId} */
ops.send_text = async (args) => {
    requireClient();
    if (!client.getRoom(args.roomId)) throw new Error(`unknown room ${args.roomId}: not in our sync`);
    const content = { msgtype: args.msgtype || MsgType.Text, body: args.body };
    if (args.formattedBody !== undefined) {
        content.format = "org.matrix.custom.html";
        content.formatted_body = args.formattedBody;
    }
    Object.assign(content, args.extraContent || {});
    try {
        const { event_id: eventId } = await client.sendMessage(args.roomId, content);
        return { eventId };
    } catch (err) {
        // Drop the failed local echo so that it does not linger as a pending event.
        const room = client.getRoom(args.roomId);
        for (const pending of room?.getPendingEvents?.() ?? []) {
            if (pending.status === sdk.EventStatus.NOT_SENT) client.cancelPendingEvent(pending);
        }
        throw new Error(`sending failed: ${errorText(err)}`);
    }
};

/** wait_message {roomId, sender?, afterEventId?, timeoutMs?: 10000, utdGraceMs?: 3000}
 * The first m.room.message of roomId (from sender, when given) that arrived after afterEventId
 * (waiting for that one too), once decryption is done. An encrypted event counts while its
 * decryption is pending; an undecryptable one is returned (decryptionFailure: true) only when it
 * stayed undecryptable for utdGraceMs (the room key may still arrive) — other encrypted event
 * types are skipped. -> {eventId, roomId, sender, type, wireType, encrypted, decryptionFailure,
 * decryptionFailureReason, content, relatesTo, megolmSessionId, originServerTs, encryptionInfo: {shieldColour,
 * shieldReason} | null} */
ops.wait_message = async (args) => {
    requireClient();
    const timeoutMs = args.timeoutMs ?? 10000;
    const graceMs = args.utdGraceMs ?? 3000;
    const deadline = Date.now() + timeoutMs;
    const found = await waitFor(
        () => {
            let start = 0;
            if (args.afterEventId) {
                const index = timeline.findIndex((ev) => ev.getId() === args.afterEventId);
                if (index < 0) return undefined;
                start = index + 1;
            }
            for (let i = start; i < timeline.length; i++) {
                const ev = timeline[i];
                if (ev.getRoomId() !== args.roomId) continue;
                if (args.sender && ev.getSender() !== args.sender) continue;
                const wire = ev.getWireType();
                if (wire === "m.room.encrypted") {
                    if (ev.isDecryptionFailure()) {
                        if (!failedAt.has(ev)) failedAt.set(ev, Date.now());
                        const waitedEnough = Date.now() - failedAt.get(ev) >= graceMs;
                        // Near the deadline, report the failure rather than a timeout.
                        if (waitedEnough || deadline - Date.now() < 300) return ev;
                        return undefined; // keep waiting: the key may arrive
                    }
                    if (ev.isBeingDecrypted() || !ev.getClearContent()) return undefined; // pending
                    if (ev.getType() === "m.room.message") return ev;
                    continue;
                }
                if (wire === "m.room.message") return ev;
            }
            return undefined;
        },
        timeoutMs,
        () => {
            const inRoom = timeline.filter((ev) => ev.getRoomId() === args.roomId);
            const anchor = args.afterEventId
                ? timeline.some((ev) => ev.getId() === args.afterEventId)
                    ? ` after ${args.afterEventId}`
                    : ` after ${args.afterEventId} (which never arrived)`
                : "";
            const what = `m.room.message from ${args.sender ?? "anyone"} in ${args.roomId}${anchor}`;
            if (inRoom.length === 0) return `${what}; no event arrived in that room`;
            return (
                `${what}; ${inRoom.length} event(s) arrived there, the last ones:\n  ` +
                inRoom.slice(-10).map(summary).join("\n  ")
            );
        },
    );
    return describeEvent(found, await encryptionInfoOf(found));
};

/** device_info {userId} -> {userId, user: {known, isVerified, isCrossSigningVerified,
 * wasCrossSigningVerified, needsUserApproval}, devices: [{deviceId, displayName, verification,
 * signedByOwner, crossSigningVerified, localVerified, isVerified, curve25519, ed25519}]}
 * (downloads the user's keys if this client does not track them yet). */
ops.device_info = async (args) => {
    requireClient();
    const userId = args.userId;
    const deviceMap = await crypto.getUserDeviceInfo([userId], true);
    const devices = [];
    for (const device of (deviceMap.get(userId) ?? new Map()).values()) {
        const status = await crypto.getDeviceVerificationStatus(userId, device.deviceId);
        devices.push({
            deviceId: device.deviceId,
            displayName: device.displayName ?? null,
            verification: sdk.DeviceVerification?.[device.verified] ?? device.verified,
            signedByOwner: Boolean(status?.signedByOwner),
            crossSigningVerified: Boolean(status?.crossSigningVerified),
            localVerified: Boolean(status?.localVerified),
            isVerified: Boolean(status?.isVerified()),
            curve25519: device.getIdentityKey() ?? null,
            ed25519: device.getFingerprint() ?? null,
        });
    }
    const user = await crypto.getUserVerificationStatus(userId);
    return {
        userId,
        user: {
            known: user.known,
            isVerified: user.isVerified(),
            isCrossSigningVerified: user.isCrossSigningVerified(),
            wasCrossSigningVerified: user.wasCrossSigningVerified(),
            needsUserApproval: user.needsUserApproval,
        },
        devices,
    };
};

/** user_identity {userId} -> {known, masterKey, selfSigningKey, needsUserApproval,
 * verificationViolation}: the cross-signing identity this client holds for the user (the ed25519
 * public keys, unpadded base64), downloading the user's keys if needed. `needsUserApproval` is
 * what makes Element warn that a user's identity changed since it was first seen. */
ops.user_identity = async (args) => {
    requireClient();
    const userId = args.userId;
    await crypto.getUserDeviceInfo([userId], true);
    const RustSdkCryptoJs = await import("@matrix-org/matrix-sdk-crypto-wasm");
    // The Rust crypto's own view (matrix-js-sdk does not expose other users' master keys).
    const identity = await crypto.olmMachine.getIdentity(new RustSdkCryptoJs.UserId(userId));
    if (!identity) return { known: false, masterKey: null, selfSigningKey: null };
    const firstKey = (json) => Object.values(JSON.parse(json).keys ?? {})[0] ?? null;
    const result = {
        known: true,
        masterKey: firstKey(identity.masterKey),
        selfSigningKey: firstKey(identity.selfSigningKey),
        needsUserApproval: Boolean(identity.identityNeedsUserApproval?.()),
        verificationViolation: Boolean(identity.hasVerificationViolation?.()),
    };
    identity.free?.();
    return result;
};

/** events {roomId?} -> {events: [summary line]} of the buffered timeline (for diagnostics). */
ops.events = async (args) => ({
    events: timeline.filter((ev) => !args.roomId || ev.getRoomId() === args.roomId).map(summary),
});

/** stop {} -> {} then the process exits. */
ops.stop = async () => {
    await shutdown();
    return {};
};

async function shutdown() {
    if (client) {
        client.stopClient(); // also stops the crypto backend
        client = null;
    }
}

// -- main loop -------------------------------------------------------------------------------------

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
let stopping = false;

input.on("line", async (line) => {
    if (!line.trim()) return;
    let request;
    try {
        request = JSON.parse(line);
    } catch (err) {
        write({ id: null, ok: false, error: `bad JSON request: ${errorText(err)}` });
        return;
    }
    const { id, op, ...args } = request;
    const handler = Object.hasOwn(ops, op) ? ops[op] : null;
    if (!handler) {
        write({ id, ok: false, error: `unknown op ${JSON.stringify(op)}` });
        return;
    }
    let response;
    try {
        response = { id, ok: true, ...(await handler(args)) };
    } catch (err) {
        if (LOG_LEVEL !== "silent") console.error(`op ${op} failed:`, err);
        response = { id, ok: false, error: errorText(err) };
    }
    if (op === "stop") {
        stopping = true;
        process.stdout.write(JSON.stringify(response) + "\n", () => process.exit(0));
    } else {
        write(response);
    }
});

input.on("close", async () => {
    // stdin closed (the test process went away): stop syncing and exit.
    if (stopping) return;
    await shutdown();
    process.exit(0);
});

process.on("unhandledRejection", (err) => {
    console.error("unhandled rejection:", err);
});

write({ event: "ready", sdkVersion: SDK_VERSION, cryptoVersion: CRYPTO_VERSION, node: process.version });
