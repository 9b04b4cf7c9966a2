// Microsoft's JavaScript Logs Ingestion client (@azure/monitor-ingestion, pinned in package-lock.json) against
// the sentinel-forwarder emulator, for tests/emulator/test_emulator_js_sdk.py.
//
// Reads one JSON object on stdin: {endpoint, ruleId, stream, logs: [...], onError: bool, maxConcurrency?}.
// The emulator's CA comes from NODE_EXTRA_CA_CERTS. Prints one JSON line: {ok, failedChunks, failedRows,
// causes: [{statusCode, code, message}], scopes: [...], error?}.
import { LogsIngestionClient } from "@azure/monitor-ingestion";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const spec = JSON.parse(Buffer.concat(chunks).toString("utf8"));

// A TokenCredential without any network: the emulator accepts any non-empty token.
const scopes = [];
const credential = {
  async getToken(requested) {
    scopes.push(...[].concat(requested));
    return { token: "js-sdk-emulator-token", expiresOnTimestamp: Date.now() + 3600_000 };
  },
};

const result = { ok: true, failedChunks: 0, failedRows: 0, causes: [], scopes };
const describe = (cause) => ({
  statusCode: cause?.statusCode ?? null,
  code: cause?.code ?? null,
  message: String(cause?.message ?? cause).slice(0, 300),
});
const client = new LogsIngestionClient(spec.endpoint, credential, { retryOptions: { maxRetries: 0 } });
const options = { maxConcurrency: spec.maxConcurrency ?? 2 };
if (spec.onError) {
  options.onError = ({ failedLogs, cause }) => {
    result.failedChunks += 1;
    result.failedRows += failedLogs.length;
    result.causes.push(describe(cause));
  };
}
try {
  await client.upload(spec.ruleId, spec.stream, spec.logs, options);
} catch (error) {
  result.ok = false;
  result.error = { name: error?.name ?? null, errors: (error?.errors ?? []).map((e) => describe(e.cause ?? e)) };
}
process.stdout.write(JSON.stringify(result) + "\n");
