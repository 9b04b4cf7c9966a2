#!/usr/bin/env node
// Parse and type-check KQL offline with Kusto.Language (@kusto/language-service-next, pinned in package.json).
//
// stdin:  JSON list of {"name": str, "query": str, "tables": {"<table>": [["<column>", "<kusto type>"], ...]}}
// stdout: JSON list, one entry per input, in order:
//         {"name": str, "diagnostics": [{"severity", "code", "message", "start", "length"}],
//          "columns": [["<column>", "<kusto type>"], ...] | null}
// "columns" are the result columns of the query's last tabular expression (null when it is not tabular).
// The table schemas come from the caller (sentinel_forwarder._schema.AUDIT_TABLE), never from this file.
"use strict";

require("@kusto/language-service-next/bridge.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.js");

/* global Kusto */
const K = Kusto.Language;
const S = K.Symbols;

function globalsFor(tables) {
  const symbols = Object.entries(tables).map(([name, columns]) => {
    const schema = "(" + columns.map(([col, type]) => `['${col}']:${type}`).join(", ") + ")";
    // $ctor7: TableSymbol(name, schema, description) in 12.4.1; overload names change between versions.
    return new S.TableSymbol.$ctor7(name, schema, null);
  });
  // $ctor1: DatabaseSymbol(name, members, isOpen) / ClusterSymbol(name, databases, isOpen).
  const db = new S.DatabaseSymbol.$ctor1("workspace", symbols, false);
  const cluster = new S.ClusterSymbol.$ctor1("cluster", [db], false);
  return K.GlobalState.Default.WithCluster(cluster).WithDatabase(db);
}

function listOf(readOnlyList) {
  const out = [];
  if (!readOnlyList) return out;
  for (let i = 0; i < readOnlyList.Count; i++) out.push(readOnlyList.getItem(i));
  return out;
}

function check(item, cache) {
  const key = JSON.stringify(item.tables || {});
  let globals = cache.get(key);
  if (!globals) {
    globals = globalsFor(item.tables || {});
    cache.set(key, globals);
  }
  const code = K.KustoCode.ParseAndAnalyze(item.query, globals);
  const diagnostics = listOf(code.GetDiagnostics()).map((d) => ({
    severity: d.Severity,
    code: d.Code,
    message: d.Message,
    start: d.Start,
    length: d.Length,
  }));
  const type = code.ResultType;
  let columns = null;
  if (type && type.Columns) {
    columns = listOf(type.Columns).map((c) => [c.Name, c.Type.Name]);
  }
  return { name: item.name, diagnostics, columns };
}

function main() {
  const chunks = [];
  process.stdin.on("data", (c) => chunks.push(c));
  process.stdin.on("end", () => {
    const items = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const cache = new Map();
    const results = items.map((item) => {
      try {
        return check(item, cache);
      } catch (err) {
        return {
          name: item.name,
          diagnostics: [{ severity: "Error", code: "VALIDATOR", message: String(err && err.message ? err.message : err), start: 0, length: 0 }],
          columns: null,
        };
      }
    });
    process.stdout.write(JSON.stringify(results));
  });
}

main();
