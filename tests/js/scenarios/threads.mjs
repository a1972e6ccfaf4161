// Threads and edits as a thread-aware client sees them: alice (over plain HTTP calls of the
// SDK) makes a room with a thread root, replies and an edit of the root; bob then starts a
// client with threadSupport, which reads the server's bundled aggregations and /threads.
// Reports what bob's client built; the assertions live in test_js_sdk.py.
//
// params: {baseUrl, alice: {userId, accessToken, deviceId}, bob: {...}, replies?: 3}
import { log, makeClient, run, sdk, startAndSync } from "../lib.mjs";

const { THREAD_RELATION_TYPE } = sdk;

await run(async (p) => {
    const { baseUrl } = p;
    const count = p.replies ?? 3;
    const alice = makeClient({ baseUrl, ...p.alice });
    const bob = makeClient({ baseUrl, ...p.bob });

    log("alice makes a room with a thread and an edit");
    const { room_id: roomId } = await alice.createRoom({ preset: "public_chat" });
    await bob.joinRoom(roomId);
    const { event_id: root } = await alice.sendEvent(roomId, "m.room.message", {
        msgtype: "m.text", body: "thread root" });
    const replies = [];
    for (let i = 0; i < count; i++) {
        const { event_id } = await alice.sendEvent(roomId, "m.room.message", {
            msgtype: "m.text", body: `reply ${i + 1}`,
            "m.relates_to": { rel_type: THREAD_RELATION_TYPE.name, event_id: root },
        });
        replies.push(event_id);
    }
    const { event_id: edit } = await alice.sendEvent(roomId, "m.room.message", {
        msgtype: "m.text", body: "* thread root, edited",
        "m.new_content": { msgtype: "m.text", body: "thread root, edited" },
        "m.relates_to": { rel_type: "m.replace", event_id: root },
    });

    log("bob starts a thread-aware client");
    // A short initial timeline: the thread comes from /threads and /relations, with
    // the server's count (replies in the same sync would be counted again by the SDK).
    await startAndSync(bob, { threadSupport: true, initialSyncLimit: 1 });
    const room = bob.getRoom(roomId);
    await room.fetchRoomThreads();
    const thread = room.getThread(root);
    if (thread) await thread.updateThreadMetadata(); // waits for its first /relations page
    const rootEvent = room.findEventById(root) ?? thread?.rootEvent;
    return {
        root, replies, edit,
        threadIds: room.getThreads().map((t) => t.id),
        threadLength: thread?.length ?? null,
        timelineIds: thread ? thread.timeline.map((e) => e.getId()) : [],
        latestReply: thread?.replyToEvent?.getId() ?? null,
        threadReplies: thread ? thread.timeline.filter((e) => e.getId() !== root)
            .map((e) => e.getId()) : [],
        rootBody: rootEvent?.getContent()?.body ?? null,
        rootReplacedBy: rootEvent?.replacingEventId() ?? null,
    };
});
