// The Cloudflare KV REST API (v4), served from real KV bindings inside workerd.
//
// Test-only. Miniflare runs this module with one KV binding per namespace; every request below
// is answered by calling the binding, so storage, validation (key length, TTL >= 60 s, value
// size), expiry and cursor listing are Cloudflare's own local KV implementation. This file only
// translates HTTP paths to binding calls and binding errors back to the API's envelope:
//
//   GET    /client/v4/accounts/:acc/storage/kv/namespaces/:ns/values/:key    raw bytes or 404
//   PUT    .../values/:key?expiration_ttl=&expiration=    raw body, or multipart value+metadata
//   DELETE .../values/:key
//   GET    .../metadata/:key                               envelope, result = metadata or null
//   GET    .../keys?prefix=&cursor=&limit=                 envelope + result_info {count, cursor}
//   PUT    .../bulk          [{key, value, base64?, expiration?, expiration_ttl?, metadata?}]
//   POST   .../bulk/get      {keys: [<=100], type: "text"|"json", withMetadata: bool}
//   POST   .../bulk/delete   [key, ...]
//
// Known differences from production, none of which the Python client relies on:
// - GET /values does not send the `expiration` header (the binding does not expose it);
//   expirations are reported by /keys, as in production.
// - Error codes other than 10000 (auth), 10009 (key not found) and 10013 (namespace not found)
//   are placeholders; the HTTP status is what production sends.
// - A bulk write item the binding rejects is reported in `unsuccessful_keys` instead of
//   failing the whole request; rate limits and eventual consistency are not simulated.

const PREFIX = "/client/v4/accounts/";
const BINDING_ERROR = /^KV (?:GET|PUT|DELETE|LIST)[A-Z_ ]* failed: (\d{3}) (.*)$/s;
const STATUS_CODES = { 400: 10001, 404: 10009, 413: 10011, 414: 10033 };
const BULK_CONCURRENCY = 16;

function envelope(result, extra = {}) {
  return Response.json({ success: true, errors: [], messages: [], result, ...extra });
}

function failure(status, code, message) {
  return Response.json(
    { success: false, errors: [{ code, message }], messages: [], result: null },
    { status },
  );
}

// Binding errors look like "KV PUT failed: 400 Invalid expiration_ttl of 30. ...".
function bindingFailure(error) {
  const match = BINDING_ERROR.exec(String(error?.message ?? error));
  if (match === null) {
    return failure(500, 10002, `internal error: ${error?.message ?? error}`);
  }
  const status = Number(match[1]);
  return failure(status, STATUS_CODES[status] ?? 10001, match[2]);
}

function putOptions(expiration, expirationTtl, metadata) {
  const options = {};
  if (expiration !== undefined && expiration !== null && expiration !== "") {
    options.expiration = Number(expiration);
  }
  if (expirationTtl !== undefined && expirationTtl !== null && expirationTtl !== "") {
    options.expirationTtl = Number(expirationTtl);
  }
  if (metadata !== undefined && metadata !== null) {
    options.metadata = metadata;
  }
  return options;
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Run `fn` over `items` with bounded concurrency; return the settled results in order.
async function settleAll(items, fn) {
  const results = new Array(items.length);
  for (let start = 0; start < items.length; start += BULK_CONCURRENCY) {
    const chunk = items.slice(start, start + BULK_CONCURRENCY);
    const settled = await Promise.allSettled(chunk.map(fn));
    settled.forEach((r, i) => (results[start + i] = r));
  }
  return results;
}

async function readJson(request) {
  try {
    return await request.json();
  } catch {
    return undefined;
  }
}

async function values(request, kv, key) {
  if (request.method === "GET") {
    const value = await kv.get(key, "arrayBuffer");
    if (value === null) return failure(404, 10009, "get: 'key not found'");
    return new Response(value, { headers: { "content-type": "application/octet-stream" } });
  }
  if (request.method === "PUT") {
    const url = new URL(request.url);
    const expiration = url.searchParams.get("expiration");
    const expirationTtl = url.searchParams.get("expiration_ttl");
    let value;
    let metadata;
    const type = request.headers.get("content-type") ?? "";
    if (type.startsWith("multipart/form-data")) {
      const form = await request.formData();
      const part = form.get("value");
      value = typeof part === "string" ? part : await part.arrayBuffer();
      const meta = form.get("metadata");
      if (meta !== null) {
        try {
          metadata = JSON.parse(typeof meta === "string" ? meta : await meta.text());
        } catch {
          return failure(400, 10001, "metadata is not valid JSON");
        }
      }
    } else {
      value = await request.arrayBuffer();
    }
    await kv.put(key, value, putOptions(expiration, expirationTtl, metadata));
    return envelope(null);
  }
  if (request.method === "DELETE") {
    await kv.delete(key);
    return envelope(null);
  }
  return failure(405, 10000, "method not allowed");
}

async function metadata(request, kv, key) {
  if (request.method !== "GET") return failure(405, 10000, "method not allowed");
  const { value, metadata: meta } = await kv.getWithMetadata(key, "arrayBuffer");
  if (value === null) return failure(404, 10009, "metadata: 'key not found'");
  return envelope(meta ?? null);
}

async function listKeys(request, kv) {
  if (request.method !== "GET") return failure(405, 10000, "method not allowed");
  const url = new URL(request.url);
  const limitText = url.searchParams.get("limit");
  const limit = limitText === null ? 1000 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 10 || limit > 1000) {
    return failure(400, 10001, `Invalid limit ${limitText}: must be an integer from 10 to 1000`);
  }
  const options = { limit };
  const prefix = url.searchParams.get("prefix");
  if (prefix) options.prefix = prefix;
  const cursor = url.searchParams.get("cursor");
  if (cursor) options.cursor = cursor;
  const page = await kv.list(options);
  const result = page.keys.map(({ name, expiration, metadata: meta }) => {
    const item = { name };
    if (expiration !== undefined) item.expiration = expiration;
    if (meta !== undefined) item.metadata = meta;
    return item;
  });
  const next = page.list_complete ? "" : page.cursor;
  return envelope(result, { result_info: { count: result.length, cursor: next } });
}

async function bulkWrite(request, kv) {
  const items = await readJson(request);
  if (!Array.isArray(items)) return failure(400, 10001, "body must be a JSON array");
  if (items.length > 10000) return failure(400, 10001, "at most 10000 items per request");
  const settled = await settleAll(items, (item) => {
    const value = item.base64 ? base64ToBytes(item.value) : item.value;
    return kv.put(item.key, value, putOptions(item.expiration, item.expiration_ttl, item.metadata));
  });
  const unsuccessful = items.filter((_, i) => settled[i].status === "rejected").map((i) => i.key);
  return envelope({
    successful_key_count: items.length - unsuccessful.length,
    unsuccessful_keys: unsuccessful,
  });
}

async function bulkDelete(request, kv) {
  const keys = await readJson(request);
  if (!Array.isArray(keys)) return failure(400, 10001, "body must be a JSON array of keys");
  if (keys.length > 10000) return failure(400, 10001, "at most 10000 keys per request");
  const settled = await settleAll(keys, (key) => kv.delete(key));
  const unsuccessful = keys.filter((_, i) => settled[i].status === "rejected");
  return envelope({
    successful_key_count: keys.length - unsuccessful.length,
    unsuccessful_keys: unsuccessful,
  });
}

async function bulkGet(request, kv) {
  const body = await readJson(request);
  const keys = body?.keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    return failure(400, 10001, "keys must be a non-empty array");
  }
  const type = body.type ?? "text";
  if (type !== "text" && type !== "json") {
    return failure(400, 10001, `type must be "text" or "json", got ${JSON.stringify(type)}`);
  }
  const found = body.withMetadata ? await kv.getWithMetadata(keys, type) : await kv.get(keys, type);
  const out = {};
  for (const [key, value] of found) {
    out[key] = body.withMetadata && value !== null
      ? { value: value.value, metadata: value.metadata ?? null }
      : value;
  }
  return envelope({ values: out });
}

async function route(request, env) {
  const url = new URL(request.url);
  if (!url.pathname.startsWith(PREFIX)) return failure(404, 7000, "No route for that URI");
  // Split the raw path so a percent-encoded "/" inside a key stays part of the key.
  const parts = url.pathname.slice(PREFIX.length).split("/");
  const [account, storage, kvWord, namespaces, namespace, action, ...rest] = parts;
  if (storage !== "storage" || kvWord !== "kv" || namespaces !== "namespaces" || !action) {
    return failure(404, 7000, "No route for that URI");
  }
  if (request.headers.get("authorization") === null) {
    return failure(401, 10000, "Authentication error");
  }
  if (request.headers.get("authorization") !== `Bearer ${env.API_TOKEN}`) {
    return failure(403, 10000, "Authentication error");
  }
  if (account !== env.ACCOUNT_ID) return failure(403, 10000, "Authentication error");
  const binding = env.NAMESPACES[namespace];
  if (binding === undefined) return failure(404, 10013, "namespace not found");
  const kv = env[binding];
  let key;
  if (action === "values" || action === "metadata") {
    if (rest.length !== 1) return failure(404, 7000, "No route for that URI");
    try {
      key = decodeURIComponent(rest[0]);
    } catch {
      return failure(400, 10001, "Could not URL-decode key name");
    }
  }
  try {
    if (action === "values") return await values(request, kv, key);
    if (action === "metadata") return await metadata(request, kv, key);
    if (action === "keys" && rest.length === 0) return await listKeys(request, kv);
    if (action === "bulk" && rest.length === 0 && request.method === "PUT") {
      return await bulkWrite(request, kv);
    }
    if (action === "bulk" && rest.length === 1 && request.method === "POST") {
      if (rest[0] === "get") return await bulkGet(request, kv);
      if (rest[0] === "delete") return await bulkDelete(request, kv);
    }
  } catch (error) {
    return bindingFailure(error);
  }
  return failure(404, 7000, "No route for that URI");
}

export default { fetch: route };
