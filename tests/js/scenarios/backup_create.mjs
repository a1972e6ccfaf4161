// The first device of a user turns key backup on with the SDK's Rust crypto, creates an
// encrypted room and sends messages; the SDK backs the room keys up to the server by
// itself. Reports the backup's decryption key (for the second device, as a recovery key
// typed in there would be), the version and the messages sent.
//
// params: {baseUrl, laptop: {userId, accessToken, deviceId}, messages?: 2}
import { check, log, makeClient, run, sdk, sleep, startAndSync } from "../lib.mjs";

await run(async (p) => {
    const client = makeClient({ baseUrl: p.baseUrl, ...p.laptop });
    await client.initRustCrypto({ useIndexedDB: false });
    await startAndSync(client);
    const crypto = client.getCrypto();

    log("creating a key backup");
    await crypto.resetKeyBackup();
    const version = await crypto.getActiveSessionBackupVersion();
    check(version, "the SDK has an active backup after resetKeyBackup");

    const { room_id: roomId } = await client.createRoom({
        name: "backed up",
        initial_state: [{ type: "m.room.encryption", state_key: "",
                          content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    // Wait until the client knows the room is encrypted before sending into it.
    for (let i = 0; i < 100 && !(await crypto.isEncryptionEnabledInRoom(roomId)); i++) {
        await sleep(100);
    }
    check(await crypto.isEncryptionEnabledInRoom(roomId), "room is encrypted");

    const sent = [];
    for (let i = 0; i < (p.messages ?? 2); i++) {
        const body = `secret message ${i}`;
        const { event_id } = await client.sendMessage(roomId, { msgtype: "m.text", body });
        sent.push({ event_id, body });
    }

    // The SDK uploads room keys in the background: wait until the server has them.
    let info = null;
    for (let i = 0; i < 200; i++) {
        info = await client.http.authedRequest(sdk.Method.Get, "/room_keys/version");
        if (info.count > 0) break;
        await sleep(150);
    }
    check(info && info.count > 0, "the SDK backed the room key up", info);
    const privateKey = await crypto.getSessionBackupPrivateKey();
    check(privateKey, "the SDK knows the backup's private key");
    return {
        roomId, sent, version, backupInfo: info,
        privateKey: Buffer.from(privateKey).toString("base64"),
    };
});
