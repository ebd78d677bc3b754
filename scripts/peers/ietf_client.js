// tus-js-client against `resumable serve`'s side of the IETF resumable-upload draft, for
// scripts/peers/ietf.
//   node ietf_client.js CREATION_URL PROTOCOL [FAULTED]
// PROTOCOL is tus-js-client's name for the draft it speaks: 'ietf-draft-03' (interop
// version 5) or 'ietf-draft-05' (interop version 6). Uploads generated files (one request,
// chunked, an empty file; with FAULTED=1, chunked through the server's injected faults),
// reads each back with GET and compares it byte for byte. Exits 1 on any mismatch or failure.
'use strict';
const tus = require('tus-js-client');

const [endpoint, protocol, faulted] = process.argv.slice(2);
const interop = { 'ietf-draft-03': '5', 'ietf-draft-05': '6' }[protocol];
if (!endpoint || !interop) {
    console.error('usage: node ietf_client.js CREATION_URL ietf-draft-03|ietf-draft-05 [1]');
    process.exit(2);
}

function data(len, seed) {
    const b = Buffer.alloc(len);
    let x = seed * 2654435761 >>> 0;
    for (let i = 0; i < len; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        b[i] = x >>> 24;
    }
    return b;
}

function upload(input, options) {
    return new Promise((resolve, reject) => {
        const u = new tus.Upload(input, {
            endpoint,
            protocol,
            retryDelays: [0, 100, 300, 500],
            storeFingerprintForResuming: false,
            ...options,
            onError: reject,
            onSuccess: () => resolve(u.url),
        });
        u.start();
    });
}

async function check(name, bytes, options) {
    const url = await upload(bytes, options);
    const res = await fetch(url, { headers: { 'Upload-Draft-Interop-Version': interop } });
    const got = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200 || !got.equals(bytes)) {
        throw new Error(`${protocol} ${name}: the server holds ${got.length} bytes ` +
            `(HTTP ${res.status}), not the ${bytes.length} uploaded`);
    }
    console.log(`tus-js-client ${protocol} (interop ${interop}) ${name}: ${bytes.length} bytes, identical`);
}

(async () => {
    const a = data(3 * 1024 * 1024 + 7, Number(interop));
    if (faulted === '1') {
        await check('chunked, through faults', a, { chunkSize: 512 * 1024 });
        return;
    }
    await check('one request', a, {});
    await check('chunked', a, { chunkSize: 700 * 1024 });
    await check('empty file', Buffer.alloc(0), {});
})().catch((e) => {
    console.error(`tus-js-client ${protocol} peer failed: ${e && e.message ? e.message : e}`);
    process.exit(1);
});
