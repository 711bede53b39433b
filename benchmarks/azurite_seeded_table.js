// Azurite's table service, in memory, whose store can be filled with rows in bulk.
//
// Used by benchmarks/ledger.py to build a 100,000-run ledger in minutes instead of the two hours
// the HTTP API takes (Azurite checks each inserted row by running a query over its whole
// collection). The server, the store and the row format are Azurite's own: this script starts
// Azurite's TableServer from node_modules, and each seeded row goes through the steps Azurite's
// TableHandler.insertEntity takes (createPersistedEntity, NormalizedEntity.normalize) before it
// is inserted into the table's LokiJS collection, the collection Azurite itself created when the
// table was created over HTTP. Only the per-row duplicate check is left to the caller (the
// Python side checks its keys are unique), and the collection's key indices are built once at
// the end instead of after every row.
//
// Protocol (one JSON object a line): stdout first says {"port": N}; each stdin line
// {"table": name, "rows": path} inserts the rows of the NDJSON file at `path` (each line the
// JSON body the Tables SDK would send for the entity) and answers {"seeded": count}. The server
// stops when stdin closes.
//
//     node benchmarks/azurite_seeded_table.js PORT
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");

const dist = path.join(__dirname, "..", "node_modules", "azurite", "dist", "src");
const TableConfiguration = require(path.join(dist, "table", "TableConfiguration")).default;
const TableServer = require(path.join(dist, "table", "TableServer")).default;
const { NormalizedEntity } = require(path.join(dist, "table", "entity", "NormalizedEntity"));
const { newTableEntityEtag } = require(path.join(dist, "table", "utils", "utils"));
const { truncatedISO8061Date } = require(path.join(dist, "common", "utils", "utils"));

const ACCOUNT = "devstoreaccount1";

function persistedEntity(properties, modified) {
  // What TableHandler.createPersistedEntity and NormalizedEntity make of a request body.
  const entity = {
    PartitionKey: properties.PartitionKey,
    RowKey: properties.RowKey,
    properties,
    lastModifiedTime: modified,
    eTag: newTableEntityEtag(modified),
  };
  new NormalizedEntity(entity).normalize();
  return entity;
}

async function seed(store, table, rowsPath) {
  const collection = store.db.getCollection(store.getTableCollectionName(ACCOUNT, table));
  if (collection === null) {
    throw new Error(`table ${table} does not exist: create it over HTTP first`);
  }
  // Indices are rebuilt once at the end, not maintained row by row.
  collection.adaptiveBinaryIndices = false;
  const lines = readline.createInterface({ input: fs.createReadStream(rowsPath) });
  let count = 0;
  let batch = [];
  for await (const line of lines) {
    if (!line) continue;
    batch.push(persistedEntity(JSON.parse(line), truncatedISO8061Date(new Date(), true, true)));
    if (batch.length === 10000) {
      collection.insert(batch);
      count += batch.length;
      batch = [];
    }
  }
  if (batch.length) collection.insert(batch);
  count += batch.length;
  collection.ensureAllIndexes(true);
  collection.adaptiveBinaryIndices = true;
  return count;
}

async function main() {
  const port = Number(process.argv[2]);
  const config = new TableConfiguration(
    "127.0.0.1", port, undefined, "unused-in-memory.json",
    false, false, undefined, undefined,
    false, true, "", "", "", undefined, false, true,
  );
  const server = new TableServer(config);
  await server.start();
  process.stdout.write(JSON.stringify({ port }) + "\n");
  const commands = readline.createInterface({ input: process.stdin });
  for await (const line of commands) {
    const command = JSON.parse(line);
    const seeded = await seed(server.metadataStore, command.table, command.rows);
    process.stdout.write(JSON.stringify({ seeded }) + "\n");
  }
  await server.close();
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
