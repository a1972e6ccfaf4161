// whoami with given credentials: {baseUrl, userId?, accessToken, deviceId?} -> whoami response.
// The smallest scenario; also used to check that SDK errors reach Python intact.
import { makeClient, run } from "../lib.mjs";

await run(async ({ baseUrl, userId, accessToken, deviceId }) => {
    const client = makeClient({ baseUrl, userId, accessToken, deviceId });
    return await client.whoami();
});
