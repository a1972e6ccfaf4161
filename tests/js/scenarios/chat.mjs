// Two syncing clients chat: alice creates a room and invites bob, bob joins, both start
// syncing, alice types and sends messages, bob's live timeline gets each exactly once, in
// order. Reports what each side saw; the assertions live in test_js_sdk.py.
//
// params: {baseUrl, alice: {userId, accessToken, deviceId}, bob: {...}, messages?: 3,
//          graceMs?: 1500 (how long to keep listening for duplicates after the last message)}
import { log, makeClient, run, sdk, sleep, startAndSync, waitForEvent } from "../lib.mjs";

const { EventType, RoomEvent, RoomMemberEvent } = sdk;

await run(async (p) => {
    const { baseUrl } = p;
    const count = p.messages ?? 3;
    const alice = makeClient({ baseUrl, ...p.alice });
    const bob = makeClient({ baseUrl, ...p.bob });
    const aliceId = p.alice.userId;
    const bobId = p.bob.userId;

    log("alice creates a room and invites bob");
    const { room_id: roomId } = await alice.createRoom({
        name: "js-sdk chat",
        preset: "private_chat",
        visibility: "private",
    });
    await alice.invite(roomId, bobId);
    log("bob joins", roomId);
    const joined = await bob.joinRoom(roomId);

    // Everything bob's client puts on a live timeline of this room, in arrival order.
    const bobTimeline = [];
    bob.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
        if (room?.roomId !== roomId) return;
        bobTimeline.push({
            event_id: event.getId(),
            type: event.getType(),
            sender: event.getSender(),
            body: event.getContent()?.body ?? null,
            toStartOfTimeline: Boolean(toStartOfTimeline),
            removed: Boolean(removed),
            live: Boolean(data?.liveEvent),
        });
    });

    log("both clients start syncing");
    await Promise.all([startAndSync(alice), startAndSync(bob)]);
    const bobRoom = bob.getRoom(roomId);
    const aliceRoom = alice.getRoom(roomId);
    const membership = {
        bobSeesOwnMembership: bobRoom?.getMyMembership() ?? null,
        aliceSeesBob: aliceRoom?.getMember(bobId)?.membership ?? null,
        bobSeesAlice: bobRoom?.getMember(aliceId)?.membership ?? null,
    };

    log("alice types");
    const typingSeen = waitForEvent(
        bob,
        RoomMemberEvent.Typing,
        (_event, member) => member.roomId === roomId && member.userId === aliceId && member.typing,
        15000,
        "bob sees alice typing",
    );
    await alice.sendTyping(roomId, true, 10000);
    await typingSeen;
    const typingUsersSeenByBob = bobRoom.getMembers().filter((m) => m.typing).map((m) => m.userId);

    log(`alice sends ${count} messages`);
    const bodies = Array.from({ length: count }, (_, i) => `message ${i + 1} from js-sdk`);
    const sent = [];
    for (const body of bodies) {
        const { event_id } = await alice.sendTextMessage(roomId, body);
        sent.push(event_id);
    }
    await alice.sendTyping(roomId, false);

    const lastId = sent[sent.length - 1];
    const hasLast = () => bobTimeline.some((e) => e.event_id === lastId);
    if (!hasLast()) {
        await waitForEvent(bob, RoomEvent.Timeline, (event) => event.getId() === lastId,
            15000, "bob receives the last message");
    }
    // Keep syncing a little longer so duplicates would show up.
    await sleep(p.graceMs ?? 1500);

    const syncStates = { alice: alice.getSyncState(), bob: bob.getSyncState() };
    alice.stopClient();
    bob.stopClient();
    return {
        roomId,
        joinedRoomId: joined.roomId,
        membership,
        typingUsersSeenByBob,
        sent: sent.map((event_id, i) => ({ event_id, body: bodies[i] })),
        bobMessages: bobTimeline.filter((e) => e.type === EventType.RoomMessage),
        bobTimelineTypes: bobTimeline.map((e) => e.type),
        syncStates,
    };
});
