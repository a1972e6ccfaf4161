// Scrollback to the room's creation: alice creates a room, bob joins, alice sends many
// messages; bob starts syncing with a small initial timeline and scrolls back (the SDK's
// /messages pagination from the sync's prev_batch) until the SDK says it reached the start.
// Then alice sends one more message, which must land at the live end. Reports bob's whole
// live timeline in order; the Python test compares it with the room's full history.
//
// params: {baseUrl, alice: {userId, accessToken, deviceId}, bob: {...}, messages?: 40,
//          initialSyncLimit?: 5, pageSize?: 7}
import { log, makeClient, run, sdk, startAndSync, waitForEvent } from "../lib.mjs";

const { EventTimeline, RoomEvent } = sdk;

await run(async (p) => {
    const { baseUrl } = p;
    const count = p.messages ?? 40;
    const alice = makeClient({ baseUrl, ...p.alice });
    const bob = makeClient({ baseUrl, ...p.bob });

    const { room_id: roomId } = await alice.createRoom({ name: "js-sdk history",
                                                         preset: "private_chat" });
    await alice.invite(roomId, p.bob.userId);
    await bob.joinRoom(roomId);
    log(`alice sends ${count} messages`);
    const sent = [];
    for (let i = 0; i < count; i++) {
        const { event_id } = await alice.sendTextMessage(roomId, `history ${i}`);
        sent.push(event_id);
    }

    await startAndSync(bob, { initialSyncLimit: p.initialSyncLimit ?? 5 });
    const room = bob.getRoom(roomId);
    const timeline = room.getLiveTimeline();
    const initialCount = timeline.getEvents().length;

    let calls = 0;
    while (timeline.getPaginationToken(EventTimeline.BACKWARDS) !== null && calls < 100) {
        await bob.scrollback(room, p.pageSize ?? 7);
        calls++;
    }
    log(`reached the start after ${calls} scrollbacks`);

    const live = waitForEvent(bob, RoomEvent.Timeline,
        (event, r, toStart) => r?.roomId === roomId && !toStart && event.getType() === "m.room.message"
            && event.getContent()?.body === "after scrollback", 15000, "bob gets the live message");
    const { event_id: liveId } = await alice.sendTextMessage(roomId, "after scrollback");
    await live;

    return {
        roomId,
        sent,
        liveId,
        initialCount,
        scrollbacks: calls,
        atStart: timeline.getPaginationToken(EventTimeline.BACKWARDS) === null,
        timeline: room.getLiveTimeline().getEvents().map((e) => ({
            event_id: e.getId(), type: e.getType(), body: e.getContent()?.body ?? null,
        })),
    };
});
