// Accounts through matrix-js-sdk: register (user-interactive auth, dummy stage), log in
// with a password twice (login("m.login.password") with an identifier and a device name,
// and the legacy loginWithPassword), whoami, list / get / rename devices, a failed login,
// logout. Reports what the server answered; the assertions live in test_js_sdk.py.
//
// params: {baseUrl, username, password, registerDeviceName, deviceName, newDeviceName}
import { check, log, makeClient, outcome, run, sdk } from "../lib.mjs";

/** Registration the way Element does it: InteractiveAuth drives the UIA stages. */
async function register(baseUrl, body) {
    const anon = makeClient({ baseUrl });
    const attempts = [];
    let flows = null;
    let unexpectedStage;
    const stuck = new Promise((_, reject) => {
        unexpectedStage = reject;
    });
    const auth = new sdk.InteractiveAuth({
        matrixClient: anon,
        doRequest: async (authDict) => {
            attempts.push(authDict ? { type: authDict.type, session: authDict.session } : null);
            try {
                return await anon.registerRequest(authDict ? { ...body, auth: authDict } : body);
            } catch (e) {
                if (e.httpStatus === 401 && e.data?.flows) flows = e.data.flows;
                throw e;
            }
        },
        // Only called for stages needing user input (the SDK does m.login.dummy by itself).
        stateUpdated: (stage, status) =>
            unexpectedStage(
                Object.assign(new Error(`registration asked for stage ${stage}`), {
                    details: { stage, status, flows },
                }),
            ),
        requestEmailToken: async () => {
            throw new Error("registration asked for an email token");
        },
    });
    const response = await Promise.race([auth.attemptAuth(), stuck]);
    return { response, flows, attempts };
}

await run(async (p) => {
    const { baseUrl, username, password } = p;
    const registerDeviceName = p.registerDeviceName ?? "js-sdk registration device";
    const deviceName = p.deviceName ?? "js-sdk device";
    const newDeviceName = p.newDeviceName ?? "js-sdk device (renamed)";

    log("registering", username);
    const registration = await register(baseUrl, {
        username,
        password,
        initial_device_display_name: registerDeviceName,
    });
    const userId = registration.response.user_id;

    log("logging in with login('m.login.password')");
    const loginResponse = await makeClient({ baseUrl }).login("m.login.password", {
        identifier: { type: "m.id.user", user: username },
        password,
        initial_device_display_name: deviceName,
    });
    check(loginResponse.access_token, "login returned no access_token", loginResponse);
    // As the SDK recommends: a fresh client built from the login response.
    const client = makeClient({
        baseUrl,
        userId: loginResponse.user_id,
        accessToken: loginResponse.access_token,
        deviceId: loginResponse.device_id,
    });

    log("logging in with loginWithPassword (legacy top-level 'user')");
    const legacyLogin = await makeClient({ baseUrl }).loginWithPassword(userId, password);
    const other = makeClient({
        baseUrl,
        userId: legacyLogin.user_id,
        accessToken: legacyLogin.access_token,
        deviceId: legacyLogin.device_id,
    });

    log("wrong password");
    const wrongPassword = await outcome(() =>
        makeClient({ baseUrl }).loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: username },
            password: password + "-wrong",
        }),
    );

    log("whoami / devices");
    const whoami = await client.whoami();
    const devices = (await client.getDevices()).devices;
    await client.setDeviceDetails(loginResponse.device_id, { display_name: newDeviceName });
    const renamed = await client.getDevice(loginResponse.device_id);
    const devicesAfterRename = (await client.getDevices()).devices;

    log("logout");
    const logout = await client.logout(true);
    const whoamiAfterLogout = await outcome(() => client.whoami());
    const otherWhoami = await other.whoami();
    const devicesAfterLogout = (await other.getDevices()).devices;

    return {
        userId,
        registration: {
            user_id: registration.response.user_id,
            device_id: registration.response.device_id,
            has_access_token: Boolean(registration.response.access_token),
            flows: registration.flows,
            attempts: registration.attempts,
        },
        login: {
            user_id: loginResponse.user_id,
            device_id: loginResponse.device_id,
            access_token: loginResponse.access_token,
        },
        legacyLogin: {
            user_id: legacyLogin.user_id,
            device_id: legacyLogin.device_id,
            access_token: legacyLogin.access_token,
        },
        wrongPassword,
        whoami,
        devices,
        renamed,
        devicesAfterRename,
        logout,
        whoamiAfterLogout,
        otherWhoami,
        devicesAfterLogout,
    };
});
