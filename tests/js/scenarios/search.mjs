// Server-side search through the SDK: searchRoomEvents, its back-pagination
// (next_batch) and searchUserDirectory.
// params: {baseUrl, userId, accessToken, deviceId, term, userTerm} ->
//   {pages: [[{body, rank, before}]], count, highlights, users}
import { makeClient, run } from "../lib.mjs";

await run(async ({ baseUrl, userId, accessToken, deviceId, term, userTerm }) => {
    const client = makeClient({ baseUrl, userId, accessToken, deviceId });
    const page = (results) => results.map((r) => ({
        body: r.context.getEvent().getContent().body,
        rank: r.rank,
        before: r.context.getTimeline().slice(0, r.context.getOurEventIndex())
            .map((e) => e.getContent().body ?? null),
    }));
    let results = await client.searchRoomEvents({ term, filter: { limit: 2 } });
    const pages = [page(results.results)];
    while (results.next_batch && pages.length < 10) {
        const seen = results.results.length;
        results = await client.backPaginateRoomEventsSearch(results);
        pages.push(page(results.results.slice(seen)));
    }
    const users = await client.searchUserDirectory({ term: userTerm, limit: 5 });
    return { pages, count: results.count, highlights: results.highlights,
             users: users.results.map((u) => u.user_id) };
});
