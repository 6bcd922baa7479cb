// Start a local Cloudflare KV behind the REST API paths (worker.mjs) and print where it listens.
//
// Configuration comes from the environment, so the API token never appears in a process list:
//   KV_EMULATOR_ACCOUNT      the account id the API accepts (32 hex characters)
//   KV_EMULATOR_NAMESPACES   comma-separated namespace ids, one real KV namespace each
//   KV_EMULATOR_TOKEN        the bearer token the API accepts
//   KV_EMULATOR_PORT         port on 127.0.0.1 (default 0: any free port)
//   KV_EMULATOR_PERSIST      directory to persist KV data in (default: in memory)
//
// When ready it prints one JSON line, {"url": "http://127.0.0.1:<port>"}, and runs until it gets
// SIGTERM/SIGINT or its stdin closes (so it never outlives the test process that started it).

import { Miniflare } from "miniflare";
import { fileURLToPath } from "node:url";

const env = process.env;
const account = env.KV_EMULATOR_ACCOUNT;
const namespaceIds = (env.KV_EMULATOR_NAMESPACES ?? "").split(",").filter(Boolean);
const token = env.KV_EMULATOR_TOKEN;
if (!account || namespaceIds.length === 0 || !token) {
  console.error("Set KV_EMULATOR_ACCOUNT, KV_EMULATOR_NAMESPACES and KV_EMULATOR_TOKEN");
  process.exit(2);
}

const kvNamespaces = {};
const routes = {};
namespaceIds.forEach((id, i) => {
  kvNamespaces[`KV${i}`] = id;
  routes[id] = `KV${i}`;
});

const here = fileURLToPath(new URL(".", import.meta.url));
const mf = new Miniflare({
  modules: true,
  // Module paths are resolved against modulesRoot; the default (the working directory) breaks
  // when the launcher runs from a temporary directory, as the tests do.
  modulesRoot: here,
  scriptPath: fileURLToPath(new URL("./worker.mjs", import.meta.url)),
  compatibilityDate: "2025-04-01",
  host: "127.0.0.1",
  port: Number(env.KV_EMULATOR_PORT ?? 0),
  // Without this Miniflare downloads a cf.json file from the internet at start-up.
  cf: false,
  kvNamespaces,
  kvPersist: env.KV_EMULATOR_PERSIST || false,
  bindings: { ACCOUNT_ID: account, API_TOKEN: token, NAMESPACES: routes },
});

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await mf.dispose();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();

const url = await mf.ready;
process.stdout.write(JSON.stringify({ url: url.origin }) + "\n");
