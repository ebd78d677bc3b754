// @tus/server with @tus/file-store on a free loopback port, for scripts/peers/tus.
//   node tus_server.js DIR [PATCH_DELAY_MS]
// Prints "listening http://127.0.0.1:PORT/files/" once it accepts requests. Every PATCH is
// held PATCH_DELAY_MS before it is handled (default 0), so that an upload lasts long enough
// to be interrupted.
'use strict';
const http = require('http');
const { Server } = require('@tus/server');
const { FileStore } = require('@tus/file-store');

const dir = process.argv[2];
const delay = Number(process.argv[3] || 0);
if (!dir) {
    console.error('usage: node tus_server.js DIR [PATCH_DELAY_MS]');
    process.exit(2);
}
const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) });
const server = http.createServer((req, res) => {
    const method = req.headers['x-http-method-override'] || req.method;
    if (method === 'PATCH' && delay > 0) {
        setTimeout(() => tus.handle(req, res), delay);
    } else {
        tus.handle(req, res);
    }
});
server.listen(0, '127.0.0.1', () => {
    console.log(`listening http://127.0.0.1:${server.address().port}/files/`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
