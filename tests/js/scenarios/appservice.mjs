// A bridge on npm's matrix-appservice (the HTTP side of matrix-appservice-bridge), with
// matrix-js-sdk clients for its puppets (as_token + ?user_id=).
// params: {baseUrl, port, asToken, hsToken, serverName, userId, accessToken, puppetPrefix}
// -> {queried, invited, roomEvents: [{type, sender, body, membership, state_key}], typing}
import { AppService } from "matrix-appservice";
import { log, makeClient, run, sdk, sleep, withTimeout } from "../lib.mjs";

await run(async ({ baseUrl, port, asToken, hsToken, serverName, userId, accessToken,
                   puppetPrefix }) => {
    const bot = makeClient({ baseUrl, accessToken: asToken });
    const puppetClient = (puppetId) =>
        makeClient({ baseUrl, accessToken: asToken, userId: puppetId,
                     queryParams: { user_id: puppetId } });

    const events = [];
    const ephemeral = [];
    const queried = [];
    const as = new AppService({ homeserverToken: hsToken });
    as.on("event", (ev) => events.push(ev));
    as.on("ephemeral", (ev) => ephemeral.push(ev));
    // A user query: the bridge creates the puppet it is asked about.
    as.onUserQuery = async (queriedId) => {
        queried.push(queriedId);
        const localpart = queriedId.slice(1).split(":")[0];
        // registerRequest() sends no token: the service's registration needs its as_token.
        await bot.http.authedRequest(sdk.Method.Post, "/register", undefined, {
            type: "m.login.application_service", username: localpart, inhibit_login: true });
    };
    await as.listen(port, "127.0.0.1", 10);
    try {
        const alice = makeClient({ baseUrl, userId, accessToken });
        const ghost = `@${puppetPrefix}js:${serverName}`;
        // Inviting a puppet nobody has registered yet asks the bridge, which creates it.
        const { room_id: roomId } = await alice.createRoom({ preset: "private_chat" });
        await alice.invite(roomId, ghost);
        const puppet = puppetClient(ghost);
        await puppet.joinRoom(roomId);
        const sent = [];
        for (let i = 0; i < 3; i++) {
            sent.push((await alice.sendTextMessage(roomId, `alice ${i}`)).event_id);
            sent.push((await puppet.sendTextMessage(roomId, `puppet ${i}`)).event_id);
        }
        const inRoom = () => events.filter((e) => e.room_id === roomId);
        const messages = () => inRoom().filter((e) => e.type === "m.room.message");
        await withTimeout((async () => {
            while (messages().length < sent.length) await sleep(100);
        })(), 30000, "the bridge receiving the room's messages");
        await alice.sendTyping(roomId, true, 30000);
        await withTimeout((async () => {
            while (!ephemeral.some((e) => e.type === "m.typing" && e.room_id === roomId &&
                                   e.content.user_ids.includes(userId))) await sleep(100);
        })(), 30000, "the bridge seeing alice type");
        await sleep(500); // anything delivered twice would show by now
        log("bridge received", inRoom().length, "room events");
        return {
            queried,
            sent,
            roomEvents: inRoom().map((e) => ({
                event_id: e.event_id, type: e.type, sender: e.sender,
                body: e.content?.body, membership: e.content?.membership,
                state_key: e.state_key })),
            ghost,
        };
    } finally {
        await as.close();
    }
});
