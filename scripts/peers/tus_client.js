// tus-js-client against `resumable serve`'s tus side, for scripts/peers/tus.
//   node tus_client.js CREATION_URL
// Uploads generated files in several ways (plain, chunked through injected faults, with
// the first chunk in the creation request, with PATCH sent as POST + X-HTTP-Method-Override,
// and a stream of unknown size), reads each back with GET and compares it byte for byte.
// Exits 1 on any mismatch or failure.
'use strict';
const { Readable } = require('stream');
const tus = require('tus-js-client');

const endpoint = process.argv[2];
if (!endpoint) {
    console.error('usage: node tus_client.js CREATION_URL');
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
            retryDelays: [0, 100, 300, 500],
            storeFingerprintForResuming: false,
            metadata: { filename: 'peer.bin', filetype: 'application/octet-stream' },
            ...options,
            onError: reject,
            onSuccess: () => resolve(u.url),
        });
        u.start();
    });
}

async function check(name, bytes, input, options) {
    const url = await upload(input, options);
    const res = await fetch(url, { headers: { 'Tus-Resumable': '1.0.0' } });
    const got = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200 || !got.equals(bytes)) {
        throw new Error(`${name}: the server holds ${got.length} bytes (HTTP ${res.status}), ` +
            `not the ${bytes.length} uploaded`);
    }
    console.log(`tus-js-client ${name}: ${bytes.length} bytes, identical`);
}

(async () => {
    const faults = 'tus.patch#2=drop-after:100000; tus.patch#3=status:503; tus.head#1=status:500';
    const a = data(3 * 1024 * 1024 + 7, 1);
    await check('one request', a, a, {});
    await check('chunked, through faults', a, a, {
        chunkSize: 512 * 1024,
        headers: { 'x-resumable-session-faults': faults },
    });
    await check('creation with upload', a, a, { chunkSize: 1024 * 1024, uploadDataDuringCreation: true });
    await check('method override', a, a, { chunkSize: 1024 * 1024, overridePatchMethod: true });
    const b = data(2 * 1024 * 1024 + 123, 2);
    await check('stream of unknown size', b, Readable.from([b.subarray(0, 700000), b.subarray(700000)]), {
        chunkSize: 256 * 1024,
        uploadLengthDeferred: true,
    });
    const empty = Buffer.alloc(0);
    await check('empty file', empty, empty, {});
})().catch((e) => {
    console.error(`tus-js-client peer failed: ${e && e.message ? e.message : e}`);
    process.exit(1);
});
