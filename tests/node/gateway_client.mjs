// A Node.js client of qpu_gateway.v1.Gateway, written from the repository's proto/ folder alone.
// Usage: node gateway_client.mjs HOST:PORT PATH/TO/proto
// proto/qpu_gateway/v1/gateway.proto is the API; proto/third_party/ holds the standard protos it
// needs beside it: google/rpc/{status,error_details}.proto to read the grpc-status-details-bin
// trailer, grpc/health/v1/health.proto for the health check.
// TLS and a bearer token, as an operator's gateway asks for them: QPU_GATEWAY_TLS_CA (PEM file of
// the server's CA) and QPU_GATEWAY_TOKEN (sent as `authorization: Bearer <token>` metadata on
// every call; gRPC sends call credentials over TLS only).
// Prints one JSON object: the Fit's ModelInfo, the Predict reply, an INVALID_ARGUMENT error with
// its google.rpc.BadRequest details decoded, and the health status.
import fs from "node:fs";
import path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const [address, protoDir] = process.argv.slice(2);
if (!address || !protoDir) {
  console.error("usage: node gateway_client.mjs HOST:PORT PATH/TO/proto");
  process.exit(2);
}
const includeDirs = [path.resolve(protoDir), path.resolve(protoDir, "third_party")];

// google.rpc.Status and BadRequest: what a client needs to read the grpc-status-details-bin
// trailer (google/protobuf/*.proto are bundled with protobufjs).
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) =>
  includeDirs.map((dir) => path.join(dir, target)).find((file) => fs.existsSync(file)) ?? target;
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");
const BadRequest = rpc.lookupType("google.rpc.BadRequest");

const definition = protoLoader.loadSync(
  ["qpu_gateway/v1/gateway.proto", "grpc/health/v1/health.proto"],
  { includeDirs, keepCase: true, longs: String, enums: String, defaults: true },
);
const pkg = grpc.loadPackageDefinition(definition);
function credentials() {
  const ca = process.env.QPU_GATEWAY_TLS_CA;
  const token = process.env.QPU_GATEWAY_TOKEN;
  if (!ca) return grpc.credentials.createInsecure();
  const tls = grpc.credentials.createSsl(fs.readFileSync(ca));
  if (!token) return tls;
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, done) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    done(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(tls, bearer);
}
const client = new pkg.qpu_gateway.v1.Gateway(address, credentials());
const health = new pkg.grpc.health.v1.Health(address, credentials());

function call(method, request, seconds = 60, stub = client) {
  const deadline = new Date(Date.now() + seconds * 1000);
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

function badRequest(err) {
  const raw = err.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return null;
  const status = Status.decode(raw);
  const out = [];
  for (const detail of status.details) {
    if (detail.type_url.endsWith("/google.rpc.BadRequest")) {
      for (const v of BadRequest.decode(detail.value).field_violations) {
        out.push({ field: v.field, description: v.description });
      }
    }
  }
  return { code: status.code, message: status.message, violations: out };
}

const rows = 8;
const x = [];
const y = [];
for (let i = 0; i < rows; i++) {
  const a = i / rows;
  const b = ((i * 7) % rows) / rows;
  x.push(a, b);
  y.push(1 + 2 * a - b);
}

const fit = await call("Fit", {
  x: { rows, cols: 2, values: x },
  y,
  params: { num_reads: 40 },
  seed: "18446744073709551615",
  feature_names: ["a", "b"],
});
const info = fit.model;
const predict = await call("Predict", {
  model_id: info.model_id,
  x: { rows, cols: 2, values: x },
  version: info.version,
});
let error = null;
try {
  await call("Fit", { x: { rows, cols: 2, values: x }, y, params: { k: 0 } });
} catch (err) {
  error = { code: err.code, details: err.details, bad_request: badRequest(err) };
}
const serving = await call("Check", { service: "qpu_gateway.v1.Gateway" }, 30, health);
client.close();
health.close();
console.log(JSON.stringify({
  fit: {
    model_id: info.model_id,
    version: info.version,
    backend: info.backend,
    seed: info.seed,
    feature_names: info.feature_names,
    n_train: info.n_train,
  },
  predict: { mean: predict.mean, std: predict.std, version: predict.version },
  error,
  health: serving.status,
}));
