// A nats.js client of nqlite (run by TestNATSJS_Client in natsjs_test.go):
// @nats-io/transport-node for requests, @nats-io/services for the service
// protocol and its error headers. It asserts as it goes and exits non-zero
// on the first failed assertion. NATS_URL names the server, NQLITE_NODES
// the comma-separated node ids expected to answer.
"use strict";
const assert = require("node:assert/strict");
const { connect } = require("@nats-io/transport-node");
const { Svcm, ServiceError } = require("@nats-io/services");

async function main() {
  const nc = await connect({ servers: process.env.NATS_URL });
  const nodes = process.env.NQLITE_NODES.split(",").sort();
  const query = async (body) => {
    const m = await nc.request("nqlite.query.main", body, { timeout: 30000 });
    assert.equal(ServiceError.isServiceError(m), false, `${body}: ${m.string()}`);
    const resp = m.json();
    for (const r of resp.results) assert.equal(r.error, undefined, `${body}: ${r.error}`);
    return resp;
  };

  // The three request forms, with values made by JavaScript.
  await query("CREATE TABLE js(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, any_)");
  const blob = Buffer.from([0, 1, 254, 255]);
  const w = await query(JSON.stringify([
    ["INSERT INTO js(name, score, data, any_) VALUES(?, ?, ?, ?)", "zoë 😀", 1.5, { base64: blob.toString("base64") }, 2.0],
    ["INSERT INTO js(name, score, any_) VALUES(:n, :s, :a)", { n: "bob", s: 2.0, a: 9007199254740993n.toString() }],
  ]));
  assert.equal(w.results.length, 2);
  assert.ok(w.seq > 0);
  const r = await query(JSON.stringify({
    statements: ["SELECT id, name, score, data, any_, typeof(any_) AS t FROM js ORDER BY id"],
    level: "strong",
    after_seq: w.seq,
  }));
  const rows = r.results[0].rows;
  assert.equal(rows.length, 2);
  assert.equal(rows[0].name, "zoë 😀");
  assert.equal(rows[0].score, 1.5);
  assert.deepEqual(Buffer.from(rows[0].data.base64, "base64"), blob);
  // JSON.stringify writes 2.0 as 2: it binds as INTEGER (README, "Values"),
  // a REAL column's affinity makes it 2.0 again, a column without one keeps 2.
  assert.equal(rows[0].t, "integer");
  assert.equal(rows[1].score, 2);
  assert.equal(rows[1].t, "text");
  assert.equal(rows[1].any_, "9007199254740993");

  // An integer past 2^53 comes back exact on the wire; JSON.parse rounds it.
  const big = await nc.request("nqlite.query.main", "SELECT 9007199254740993 AS n, CAST(9007199254740993 AS TEXT) AS s", { timeout: 30000 });
  assert.match(big.string(), /"n":9007199254740993,/);
  assert.equal(big.json().results[0].rows[0].n, 9007199254740992);
  assert.equal(big.json().results[0].rows[0].s, "9007199254740993");

  // A request error: micro's headers, as nats.js reads them, and the body.
  const bad = await nc.request("nqlite.query.main", "ATTACH 'x.db' AS x", { timeout: 30000 });
  assert.equal(ServiceError.isServiceError(bad), true);
  const se = ServiceError.toServiceError(bad);
  assert.equal(se.code, 403);
  assert.match(se.message, /ATTACH/);
  assert.equal(bad.headers.get("Nqlite-Error-Code"), "forbidden");
  assert.equal(bad.json().code, "forbidden");

  // The service protocol through the services client: every node answers.
  const svc = new Svcm(nc).client({ strategy: "timer", maxWait: 1000 });
  const collect = async (it) => { const out = []; for await (const x of await it) out.push(x); return out; };
  const pings = await collect(svc.ping("nqlite"));
  assert.deepEqual(pings.map((p) => p.metadata.node).sort(), nodes);
  for (const p of pings) assert.equal(p.type, "io.nats.micro.v1.ping_response");
  const infos = await collect(svc.info("nqlite"));
  assert.equal(infos.length, nodes.length);
  for (const i of infos) {
    assert.equal(i.type, "io.nats.micro.v1.info_response");
    assert.deepEqual(i.endpoints.map((e) => e.subject).sort(),
      ["nqlite.check.main", "nqlite.load.main", "nqlite.query.main", "nqlite.read.main", "nqlite.snapshot.main"]);
  }
  const stats = await collect(svc.stats("nqlite"));
  assert.equal(stats.length, nodes.length);
  let requests = 0, errors = 0;
  for (const s of stats) {
    assert.equal(s.type, "io.nats.micro.v1.stats_response");
    const q = s.endpoints.find((e) => e.subject === "nqlite.query.main");
    requests += q.num_requests;
    errors += q.num_errors;
    assert.equal(q.data.db, "main");
    assert.equal(q.data.state, "serving");
  }
  // serving's checks from Go are not counted here: at least ours, exactly one error.
  assert.ok(requests >= 6, `num_requests ${requests}`);
  assert.equal(errors, 1);
  // A ping to one node by its id.
  const one = await collect(svc.ping("nqlite", pings[0].id));
  assert.equal(one.length, 1);

  await nc.drain();
  console.log("ok", nodes.join(","));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
