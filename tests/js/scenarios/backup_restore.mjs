// A second device of the same user, logged in after the messages were sent (so no other
// device shared the room key with it), is given the backup's decryption key, restores the
// key backup with the SDK's Rust crypto and decrypts the messages.
//
// params: {baseUrl, phone: {userId, accessToken, deviceId}, privateKey (base64), version,
//          roomId, eventIds: [...]}
import { log, makeClient, run, sdk, startAndSync } from "../lib.mjs";

await run(async (p) => {
    const client = makeClient({ baseUrl: p.baseUrl, ...p.phone });
    await client.initRustCrypto({ useIndexedDB: false });
    await startAndSync(client);
    const crypto = client.getCrypto();

    // Before restoring, the phone cannot read the messages.
    const decryptAll = async () => {
        const out = [];
        for (const eventId of p.eventIds) {
            const raw = await client.fetchRoomEvent(p.roomId, eventId);
            const event = new sdk.MatrixEvent(raw);
            await client.decryptEventIfNeeded(event);
            out.push({ event_id: eventId, type: event.getType(),
                       body: event.getContent()?.body ?? null,
                       decryptionFailure: event.isDecryptionFailure() });
        }
        return out;
    };
    const before = await decryptAll();

    log("restoring the key backup");
    const key = Uint8Array.from(Buffer.from(p.privateKey, "base64"));
    await crypto.storeSessionBackupPrivateKey(key, p.version);
    const backupInfo = await crypto.getKeyBackupInfo();
    const restored = await crypto.restoreKeyBackup();
    const after = await decryptAll();
    return { before, after, restored: { total: restored.total, imported: restored.imported },
             backupVersion: backupInfo?.version ?? null };
});
