// Calls remove.bg's npm client (node_modules/remove.bg, unmodified) once and prints what it resolved
// or rejected with, as one JSON line. The client's endpoint is fixed to https://api.remove.bg, so
// this driver routes Node's HTTPS connections (https.globalAgent, used by both of the client's HTTP
// stacks) to a loopback TLS terminator in front of our server, at REMOVEBG_TLS_PORT; the terminator's
// certificate for api.remove.bg comes from a test CA that Node trusts through NODE_EXTRA_CA_CERTS.
// Usage: REMOVEBG_TLS_PORT=... node drive.js '{"call": "removeBackgroundFromImageFile", "options": {...}}'
"use strict";
const https = require("https");
const tls = require("tls");

const port = Number(process.env.REMOVEBG_TLS_PORT);
class LoopbackAgent extends https.Agent {
  createConnection(options, callback) {
    if (options.host !== "api.remove.bg") {
      throw new Error(`refusing a connection to ${options.host}: only api.remove.bg is routed`);
    }
    return tls.connect({ ...options, host: "127.0.0.1", port, servername: "api.remove.bg" }, callback);
  }
}
https.globalAgent = new LoopbackAgent();

const removebg = require("remove.bg");
const { call, options } = JSON.parse(process.argv[2]);
removebg[call](options).then(
  (result) => console.log(JSON.stringify({ resolved: result })),
  (error) => console.log(JSON.stringify({ rejected: error && error.message ? error.message : error })),
);
