// An echo server built on Node `ws`, driven by tests/interop.rs.
//
// Usage: node node_server.mjs [--port N] [--tls CERT KEY]
//
// Prints what py_echo_server.py prints ("listening on PORT", "connect
// PATH", each message received, "closed CODE REASON") and behaves the
// same: it echoes every message, closes with CODE and REASON on the text
// "!close CODE REASON", and on SIGTERM closes every client with 1001.

import { readFileSync } from "node:fs";
import { createServer as createHttp } from "node:http";
import { createServer as createHttps } from "node:https";
import { WebSocketServer } from "ws";
import { report, say } from "./node_client.mjs";

const args = process.argv.slice(2);
const portAt = args.indexOf("--port");
const port = portAt >= 0 ? Number(args[portAt + 1]) : 0;
const tlsAt = args.indexOf("--tls");
const http =
  tlsAt >= 0
    ? createHttps({ cert: readFileSync(args[tlsAt + 1]), key: readFileSync(args[tlsAt + 2]) })
    : createHttp();
const wss = new WebSocketServer({ server: http, maxPayload: 64 * 1024 * 1024 });

wss.on("connection", (ws, request) => {
  say("connect", request.url);
  ws.on("message", (data, isBinary) => {
    report(data, isBinary);
    const text = isBinary ? "" : data.toString("utf8");
    if (text.startsWith("!close ")) {
      const [code, ...reason] = text.slice("!close ".length).split(" ");
      ws.close(Number(code), reason.join(" "));
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on("close", (code, reason) => say("closed", code, reason.toString("utf8")));
});

process.on("SIGTERM", () => {
  for (const ws of wss.clients) ws.close(1001, "going away");
  wss.close();
  http.close(() => process.exit(0));
  // Clients that never answer the close do not keep it running.
  setTimeout(() => process.exit(0), 2000).unref();
});

http.listen(port, "127.0.0.1", () => say("listening on", http.address().port));
