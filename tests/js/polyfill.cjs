// Preloaded with `node --require ./polyfill.cjs`: matrix-js-sdk >= 37.6 targets Node 22 and uses Promise.withResolvers (Node 22+).
Promise.withResolvers ??= function () { let resolve, reject; const promise = new this((res, rej) => { resolve = res; reject = rej; }); return { promise, resolve, reject }; };
