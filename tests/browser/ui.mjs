// The web UI in a real browser (Debian's chromium through playwright-core), used as a person
// would: find the service, search its traces, open one, read the timeline, click spans, follow
// to logs and back, chart metrics. Screenshots of each screen go to $SHOTS.
//
// Environment: BASE_URL (the OTLP/HTTP port's URL), DATA (what tests/e2e/ui_data.py printed),
// SHOTS (a directory), CHROMIUM (the browser), MODE: "ui" (everything) or "token" (a server
// with auth.query_token = $QUERY_TOKEN). Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const base = process.env.BASE_URL;
const shots = process.env.SHOTS;
const mode = process.env.MODE ?? "ui";
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, timezoneId: "Europe/Berlin" });
const page = await context.newPage();
const problems = [];
page.on("pageerror", (err) => problems.push(`script error: ${err.message}`));
// Failed loads are checked by their responses below, where the expected 404s are known.
page.on("console", (msg) => {
  if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) problems.push(`console error: ${msg.text()}`);
});
const expectedFailures = new Set();
page.on("response", (response) => {
  if (response.status() >= 400 && !expectedFailures.has(new URL(response.url()).pathname)) {
    problems.push(`${response.status()} for ${response.url()}`);
  }
});

const step = (name) => console.log(`- ${name}`);
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: false });
const ready = () => page.waitForSelector("html[data-ready]");
const goto = async (path) => {
  const response = await page.goto(base + path);
  await ready();
  return response;
};

try {
  if (mode === "token") {
    await tokenRun();
  } else if (mode === "llm") {
    await llmRun(JSON.parse(process.env.DATA));
  } else {
    await uiRun(JSON.parse(process.env.DATA));
  }
  assert.deepEqual(problems, [], "no script errors in any page");
  console.log("browser checks passed");
} finally {
  await browser.close();
}

async function tokenRun() {
  step("a page asked for without the token shows the sign-in form");
  await page.goto(`${base}/traces?service=frontend`);
  assert.match(page.url(), /\/login\?next=/);
  expectedFailures.add("/login");
  await page.fill("input[name=token]", "not the token");
  await page.click("button[type=submit]");
  assert.match(await page.textContent(".error"), /not a query token/);
  step("the token given, the page asked for is shown, and later pages too");
  await page.fill("input[name=token]", process.env.QUERY_TOKEN);
  await page.click("button[type=submit]");
  await ready();
  assert.match(page.url(), /\/traces\?service=frontend$/);
  assert.equal(await page.textContent("h1"), "Traces");
  await goto("/");
  assert.equal(await page.textContent("h1"), "Services");
  await shot("sign-in-then-services");
  const cookies = await context.cookies();
  const cookie = cookies.find((c) => c.name === "otelephant_session");
  assert.ok(cookie?.httpOnly && cookie.sameSite === "Strict", "the session is kept in an HttpOnly, SameSite=Strict cookie");
  assert.match(cookie.value, /^[0-9a-f]{64}$/, "the cookie holds a session id");
  assert.ok(!cookie.value.includes(process.env.QUERY_TOKEN), "never the token");

  step("signing out ends the session on the server: the same cookie no longer reads");
  const copied = cookie.value;
  await page.evaluate(() => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = "/logout";
    document.body.append(form);
    form.submit();
  });
  await page.waitForURL(/\/login$/);
  await context.addCookies([{ ...cookie, value: copied }]);
  await page.goto(`${base}/traces`);
  assert.match(page.url(), /\/login\?next=/, "the copied cookie is refused");
}

async function uiRun(data) {
  step("services: both services with their RED figures");
  await goto("/");
  await page.waitForSelector("tr[data-service=frontend]");
  const services = await page.$$eval("table.services tbody tr", (rows) => rows.map((r) => r.dataset.service));
  assert.ok(services.includes("frontend") && services.includes("payments") && services.includes("batch"), `${services}`);
  assert.equal(await page.textContent("tr[data-service=payments] td.error-rate"), "100.0%", "payments' one served span failed");
  assert.match(await page.textContent("tr[data-service=payments] td.p50"), /ms$/, "p50 is a duration");
  const edges = await page.$$eval("table.dependencies tbody tr", (rows) => rows.map((r) => [r.dataset.edge, r.querySelector("td.calls").textContent]));
  assert.deepEqual(edges, [["frontend -> payments", "1"], ...data.sql.leaves.map(([caller, , peer, calls]) => [`${caller} -> ${peer}`, String(calls)])],
    "frontend's POST /charge called payments once; then what payments calls that sends no spans");
  const red = await page.$$eval(".red figure.red-chart", (figures) => figures.map((f) => f.dataset.chart));
  assert.deepEqual(red, ["rate", "errors", "p95"], "RED over time: three charts");
  const lines = await page.$$eval(".red figure[data-chart=rate] g.series", (series) => series.map((g) => g.dataset.series));
  assert.ok(lines.includes("payments") && lines.includes("frontend"), `a line per busy service: ${lines}`);
  // A single rate says what it is: the mean over the range, and the busiest minute's, which
  // SQL over the stored spans gives.
  const mean = Number(await page.textContent("tr[data-service=frontend] td.rate-mean"));
  const peak = Number(await page.textContent("tr[data-service=frontend] td.rate-peak"));
  const busiest = data.sql.busiest_minute_requests / 60;
  assert.ok(Math.abs(peak - busiest) <= busiest * 0.01, `busiest minute ${peak}/s, SQL ${busiest}/s`);
  assert.ok(mean < peak, `the hour's mean ${mean}/s is below the busiest minute's ${peak}/s`);
  assert.match(await page.textContent("table.services thead"), /Requests\/s, mean.*Requests\/s, busiest minute/s);
  assert.ok(await page.$("tr[data-service=frontend] td.rate-line svg.sparkline path"), "requests per minute, in the row");
  // Error rate and p95 per minute in the row too; the error line's title names the lowest and
  // highest minute, as SQL over the spans gives them.
  const [lowError, highError] = data.sql.frontend_error_percent;
  assert.equal(await page.textContent("tr[data-service=frontend] td.error-line svg title"),
    `frontend: error rate per minute, from ${lowError.toFixed(1)}% to ${highError.toFixed(1)}%`);
  assert.match(await page.textContent("tr[data-service=frontend] td.p95-line svg title"), /^frontend: p95 per minute, from [\d.]+ [nµm]?s to [\d.]+ [nµm]?s$/);
  step("the service map: a node per service, an arrow per call pair with its calls, failures and p95 as SQL gives them");
  const arrows = await page.$$eval("svg.service-map g.edge", (gs) =>
    gs.map((g) => [g.dataset.edge, Number(g.dataset.calls), Number(g.dataset.errors), Number(g.dataset.p95)]));
  assert.equal(arrows.length, data.sql.edges.length + data.sql.leaves.length);
  const toLeaves = data.sql.leaves.map(([caller, , peer, calls, failed, p95]) => [`${caller} -> ${peer}`, calls, failed, p95]);
  for (const [edge, calls, failed, p95] of [...data.sql.edges, ...toLeaves]) {
    const drawn = arrows.find((a) => a[0] === edge);
    assert.ok(drawn, `${edge} is drawn`);
    assert.deepEqual(drawn.slice(1, 3), [calls, failed], `${edge}: calls and failures`);
    assert.ok(Math.abs(drawn[3] - p95) <= p95 * 0.01, `${edge}: p95 ${drawn[3]} within 1% of ${p95}`);
  }
  const nodeX = async (service) => Number(await page.$eval(`svg.service-map a.node[data-service="${service}"] rect`, (r) => r.getAttribute("x")));
  assert.ok(await nodeX("frontend") < await nodeX("payments"), "the caller left of the called");
  const label = await page.textContent('svg.service-map g.edge[data-edge="frontend -> payments"] text');
  assert.match(label, /^1 call · 1 failed · p95 [\d.]+ ms$/);
  step("the map's leaves: the database, queue and host payments calls, each drawn by its kind right of payments; the host frontend calls by name is payments itself, no leaf");
  const leaves = await page.$$eval("svg.service-map g.node.peer", (gs) => gs.map((g) => [g.dataset.kind, g.dataset.peer]));
  assert.deepEqual(leaves.sort(), data.sql.leaves.map(([, kind, peer]) => [kind, peer]).sort());
  assert.deepEqual(leaves.map(([kind]) => kind).sort(), ["database", "messaging", "remote"]);
  for (const [, peer] of leaves) {
    const x = Number(await page.$eval(`svg.service-map g.node.peer[data-peer="${peer}"] rect`, (r) => r.getAttribute("x")));
    assert.ok(x > await nodeX("payments"), `${peer} right of payments`);
  }
  assert.equal(await page.$$eval('svg.service-map [data-peer="payments"]', (n) => n.length), 0, "server.address payments answered with payments' spans");
  assert.ok(await page.$("svg.service-map g.node.peer.database path.icon"), "a database is drawn as one");

  step("service colours: a different palette colour each, the same on every page");
  const colors = Object.fromEntries(await page.$$eval("table.services tbody tr", (rows) =>
    rows.map((r) => [r.dataset.service, getComputedStyle(r.querySelector("span.dot")).backgroundColor])));
  assert.equal(new Set(Object.values(colors)).size, Object.keys(colors).length, `distinct colours: ${JSON.stringify(colors)}`);
  await shot("services");

  await Promise.all([page.waitForNavigation(), page.click('svg.service-map a.node[data-service="payments"]')]);
  assert.match(page.url(), /\/traces\?service=payments/, "a node opens its service's traces");

  step("a service's operations with their spans, error rate and percentiles, as SQL counts them");
  await goto("/operations?service=payments");
  const operations = await page.$$eval("table.operations tbody tr", (rows) =>
    rows.map((r) => [r.dataset.operation, Number(r.dataset.kind), Number(r.querySelector("td.spans").textContent), r.querySelector("td.error-rate").textContent]));
  const expected = data.sql.payments_operations.map(([name, kind, spans, failed]) => [name, kind, spans, `${(failed * 100 / spans).toFixed(1)}%`]);
  assert.deepEqual(operations.sort(), expected.sort());
  await goto("/");

  step("the service's traces: a list and a scatter plot");
  await page.click("tr[data-service=frontend] td:first-child a");
  await ready();
  assert.match(page.url(), /\/traces\?service=frontend/);
  await page.waitForSelector(`tr[data-trace="${data.trace_id}"]`);
  assert.equal((await page.$$("svg.scatter circle")).length, data.sql.frontend_requests, "a point per request SQL finds");
  assert.match(await page.textContent("figure.scatter figcaption"), new RegExp(`: all ${data.sql.frontend_requests}\\. Click`));
  step("past 1,000 requests the scatter plot is a sample spread over the range, and says so");
  await goto("/traces?service=poller");
  assert.equal((await page.$$("svg.scatter circle")).length, 1000, `1,000 of the poller's ${data.sql.poller_requests} requests`);
  assert.match(await page.textContent("figure.scatter figcaption"), /: a sample of 1000 spread over the range: up to 10 from each of 100 equal stretches of it, then more from the busier ones \(more match/);
  await shot("traces-sampled");
  await goto("/traces?service=frontend");
  step("a drag across the scatter plot searches that stretch of time and durations");
  const checkoutPoint = page.locator("svg.scatter circle", { has: page.locator("title", { hasText: "GET /checkout" }) });
  await checkoutPoint.scrollIntoViewIfNeeded();
  const dot = await checkoutPoint.boundingBox();
  const [cx, cy] = [dot.x + dot.width / 2, dot.y + dot.height / 2];
  await page.mouse.move(cx - 20, cy - 20);
  await page.mouse.down();
  await page.mouse.move(cx, cy, { steps: 4 });
  await page.mouse.move(cx + 20, cy + 20, { steps: 4 });
  await Promise.all([page.waitForNavigation(), page.mouse.up()]);
  await ready();
  const selected = new URL(page.url()).searchParams;
  assert.ok(selected.get("start") && selected.get("end") && !selected.get("range"), page.url());
  const ms = (text) => Number(text.replace(/ms$/, ""));
  const rootMillis = data.sql.checkout_root_nanos / 1e6;
  assert.ok(ms(selected.get("min_duration")) < rootMillis && rootMillis < ms(selected.get("max_duration")), `${rootMillis} ms: ${page.url()}`);
  const inBox = await page.$$eval("table.traces tbody tr", (rows) => rows.map((r) => r.dataset.trace));
  assert.deepEqual(inBox, [data.trace_id], "the checkout trace, alone in the box");
  await page.goBack();
  await ready();
  const row = await page.textContent(`tr[data-trace="${data.trace_id}"]`);
  assert.match(row, /GET \/checkout/);
  assert.match(row, /payments/, "the trace's services are listed");
  step("sorting by duration in SQL: the longest first, then the other way from the header");
  await Promise.all([page.waitForNavigation(), page.click("table.traces thead a.sort:text('Duration')")]);
  await ready();
  assert.match(page.url(), /order=longest/);
  const byDuration = await page.$$eval("table.traces tbody tr", (rows) => rows.map((r) => r.dataset.trace));
  assert.equal(byDuration[0], data.trace_id, "the checkout trace (103 ms) before the orphan's");
  assert.equal(await page.$eval("select[name=order]", (s) => s.value), "longest", "the form says how the list is sorted");
  const picker = await page.$$eval("datalist#operations option", (o) => o.map((e) => e.value));
  assert.deepEqual(picker, ["GET /checkout", "POST /charge", "orphan work"], "the operation picker lists the service's operations");
  await shot("traces");

  step("a search with an attribute filter, errors only, and a minimum duration");
  await page.fill("input[name=attr] >> nth=0", "http.response.status_code=502");
  await page.check("input[name=errors]");
  await page.fill("input[name=min_duration]", "1ms");
  await Promise.all([page.waitForNavigation(), page.click("form.search button[type=submit]")]);
  await ready();
  assert.match(page.url(), /attr=http.response.status_code%3D502/);
  const found = await page.$$eval("table.traces tbody tr", (rows) => rows.map((r) => r.dataset.trace));
  assert.deepEqual(found, [data.trace_id], "only the trace with that attribute and errors");
  await page.fill("input[name=attr] >> nth=0", "http.response.status_code=\"502\"");
  await Promise.all([page.waitForNavigation(), page.click("form.search button[type=submit]")]);
  await ready();
  assert.match(await page.textContent("main"), /No trace in the last hour matches/, "a string 502 is not the int 502");

  step("the trace: every span on the timeline, nested by parent");
  await goto(`/trace/${data.trace_id}`);
  const rows = await page.$$eval(".span-row", (rs) =>
    rs.map((r) => ({ name: r.querySelector(".span-link").textContent, depth: Number(r.dataset.depth), id: r.dataset.span })));
  assert.deepEqual(rows.map((r) => [r.name, r.depth]), [
    ["GET /checkout", 0], ["POST /charge", 1], ["charge", 2], ["SELECT accounts", 3],
  ]);
  assert.equal(await page.textContent("#span-count"), "4");
  const timelineColors = await page.$$eval(".span-row", (rs) =>
    rs.map((r) => [r.querySelector(".svc").textContent, getComputedStyle(r.querySelector(".svc")).color]));
  for (const [service, color] of timelineColors) {
    assert.equal(color, colors[service], `${service} has its services-page colour on the timeline`);
  }

  step("the minimap: dragging across its second half zooms every bar into it, kept in the URL; a click shows all again");
  assert.equal(await page.$$eval(".track.minimap svg rect", (r) => r.length), 4, "a bar per span");
  const map = await page.$(".track.minimap");
  await map.scrollIntoViewIfNeeded();
  const box = await map.boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.75, box.y + box.height / 2, { steps: 4 });
  await page.mouse.move(box.x + box.width - 1, box.y + box.height / 2, { steps: 4 });
  await page.mouse.up();
  await page.waitForFunction(() => new URL(location.href).searchParams.has("zoom"));
  const zoom = new URL(page.url()).searchParams.get("zoom");
  assert.match(zoom, /^0\.5\d{3}-0\.99\d{2}$/, `zoom ${zoom}`);
  const [from, to] = zoom.split("-").map(Number);
  // Each bar's left edge on screen is where its start falls within the zoomed stretch.
  const placedBars = await page.$$eval(".span-row .track", (tracks) => tracks.map((track) => {
    const rect = track.querySelector("svg rect");
    const t = track.getBoundingClientRect();
    return { start: Number(rect.getAttribute("x")) / 1000, left: rect.getBoundingClientRect().left - t.left, width: t.width };
  }));
  for (const bar of placedBars) {
    const expected = ((bar.start - from) / (to - from)) * bar.width;
    assert.ok(Math.abs(bar.left - expected) <= 2, `a bar starting at ${bar.start} is at ${bar.left}px, expected ${expected}px`);
  }
  const duration = Number(await page.$eval(".trace-view", (v) => v.dataset.duration));
  const firstTick = await page.textContent(".ruler .track span");
  assert.equal(firstTick, `${((duration * from) / 1e6).toFixed(duration * from >= 1e8 ? 0 : 1)} ms`, "the ruler starts where the zoom does");
  await shot("trace-zoomed");
  await page.reload();
  await ready();
  assert.equal(await page.$eval(".span-row .track svg", (s) => s.getAttribute("viewBox")), `${(from * 1000).toFixed(3)} 0 ${((to - from) * 1000).toFixed(3)} 10`, "the zoom survives a reload");
  const again = await page.$(".track.minimap");
  await again.scrollIntoViewIfNeeded();
  const box2 = await again.boundingBox();
  await page.mouse.click(box2.x + box2.width * 0.3, box2.y + box2.height / 2);
  await page.waitForFunction(() => !new URL(location.href).searchParams.has("zoom"));
  assert.equal(await page.$eval(".span-row .track svg", (s) => s.getAttribute("viewBox")), "0.000 0 1000.000 10");
  assert.equal(await page.$$eval(".span-row.failed", (e) => e.length), 3, "three spans failed");
  assert.ok((await page.$$(".span-row rect.event")).length >= 2, "events are marked on their bars");

  step("where the trace spends its time: the critical path and each span's self time, as SQL gives it");
  const timing = await page.$$eval(".span-row", (rs) =>
    rs.map((r) => ({ id: r.dataset.span, self: r.dataset.self, critical: r.classList.contains("critical"), marks: r.querySelectorAll("rect.critical").length })));
  // The calls are nested one inside the other: the trace's end waited on every one of them.
  assert.deepEqual(timing.map((r) => r.critical), [true, true, true, true], "every span of the chain is on the critical path");
  assert.ok(timing.every((r) => r.marks >= 1), "each is marked on its bar");
  assert.deepEqual(Object.fromEntries(timing.map((r) => [r.id, r.self])), data.sql.self_times, "self times as SQL computes them");
  assert.match(await page.textContent(`.span-row[data-span="${rows[0].id}"] .dur`), /· self /, "the root's self time beside its duration");
  await shot("trace");

  step("the trace downloads as OTLP JSON that names every span");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#trace-download")]);
  assert.equal(download.suggestedFilename(), `trace-${data.trace_id}.json`);
  const otlp = JSON.parse(readFileSync(await download.path(), "utf8"));
  const sent = otlp.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
  assert.deepEqual(sent.map((sp) => sp.name).sort(), ["GET /checkout", "POST /charge", "SELECT accounts", "charge"]);
  assert.ok(sent.every((sp) => sp.traceId === data.trace_id && /^[0-9a-f]{16}$/.test(sp.spanId)), "ids in hex, as OTLP/JSON writes them");

  step("find span: by name and by attribute, ignoring case, matches highlighted");
  await page.fill("form.find input[name=find]", "ACCOUNTS");
  await Promise.all([page.waitForNavigation(), page.click("form.find button[type=submit]")]);
  await ready();
  assert.equal(await page.$eval("#find-count", (e) => e.dataset.matches), "1");
  assert.deepEqual(await page.$$eval(".span-row.match .span-link", (l) => l.map((a) => a.textContent)), ["SELECT accounts"]);
  await goto(`/trace/${data.trace_id}?find=payment.currency`);
  assert.deepEqual(await page.$$eval(".span-row.match .span-link", (l) => l.map((a) => a.textContent)), ["charge"]);
  await goto(`/trace/${data.trace_id}?find=${"x".repeat(5000)}`);
  assert.equal(await page.$eval("#find-count", (e) => e.dataset.matches), "0");

  step("a span's details on click, its id in the URL, back and reload keep it");
  await goto(`/trace/${data.trace_id}`);
  await page.click(`.span-row[data-span="${data.charge_span}"] .span-link`);
  await page.waitForSelector(`section.span-details[data-span="${data.charge_span}"]`);
  assert.match(page.url(), new RegExp(`span=${data.charge_span}`));
  const details = await page.textContent("#details");
  for (const text of ["payment.amount", "double", "42.5", "payment.retried", "bool", "exception", "card declined",
    "host.name", "payments-1", "shop.payments", "0.9.2", "server", "ERROR"]) {
    assert.ok(details.includes(text), `details show ${text}`);
  }
  await shot("span");
  await page.reload();
  await ready();
  assert.ok(await page.$(`section.span-details[data-span="${data.charge_span}"]`), "a reload shows the same span");
  await page.click(".span-row[data-depth='0'] .span-link");
  await page.waitForSelector(".span-details h2:text('GET /checkout')");
  await page.goBack();
  await page.waitForSelector(`section.span-details[data-span="${data.charge_span}"]`);

  step("a crafted span parameter runs nothing: only this trace's spans are fetched, by hex id");
  const fetched = [];
  const track = (request) => fetched.push(new URL(request.url()).pathname);
  page.on("request", track);
  const payload = encodeURIComponent(
    '../../../jaeger/api/traces?service=x&lookback=<img src=x onerror="document.documentElement.dataset.pwned=1">');
  await goto(`/trace/${data.trace_id}?span=${payload}`);
  await page.click(`.span-row[data-span="${data.charge_span}"] .span-link`);
  await page.waitForSelector(`section.span-details[data-span="${data.charge_span}"]`);
  await page.goBack();
  await page.waitForSelector("#details p.hint");
  // A fragment change alone (what a framing page could do) must not fetch anything else either.
  await page.evaluate((p) => { history.pushState({}, "", `?span=${p}`); dispatchEvent(new PopStateEvent("popstate")); }, payload);
  await page.waitForSelector("#details p.hint");
  page.off("request", track);
  assert.equal(await page.evaluate(() => document.documentElement.dataset.pwned), undefined, "no script ran");
  const strays = fetched.filter((path) => path.startsWith("/trace/") && !/^\/trace\/[0-9a-f]{32}(\/span\/[0-9a-f]{16})?$/.test(path));
  assert.deepEqual(strays, [], "every fetch is a trace or a span of it");
  assert.ok(!fetched.some((path) => path.startsWith("/jaeger")), `${fetched}`);

  step("the UI cannot be framed by a page of another origin");
  const framer = createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><iframe id="ui" src="${base}/trace/${data.trace_id}"></iframe>`);
  });
  await new Promise((done) => framer.listen(0, "127.0.0.1", done));
  const framing = await context.newPage();
  const refused = framing.waitForEvent("console", { predicate: (msg) => /frame-ancestors|X-Frame-Options/i.test(msg.text()) });
  await framing.goto(`http://127.0.0.1:${framer.address().port}/`);
  await refused;
  const child = framing.frames().find((f) => f !== framing.mainFrame());
  const shown = await child.$("html[data-ready]").catch(() => null);
  assert.equal(shown, null, "the framed UI is not shown");
  await framing.close();
  framer.close();

  step("collapsing a subtree hides it, expanding shows it again");
  await page.click(".span-row[data-depth='1'] .toggle");
  assert.equal(await page.$$eval(".span-row:not([hidden])", (e) => e.length), 2);
  await page.click(".span-row[data-depth='1'] .toggle");
  assert.equal(await page.$$eval(".span-row:not([hidden])", (e) => e.length), 4);

  step("the trace's logs, one click away, each linking back to its span");
  await Promise.all([page.waitForNavigation(), page.click("#trace-logs")]);
  await ready();
  const logs = await page.$$eval("li.log", (items) => items.map((i) => i.textContent));
  assert.equal(logs.length, 2, "the two records inside the trace");
  assert.ok(logs.some((l) => l.includes("card declined for order o-17") && l.includes("WARN")));
  const structured = await page.textContent("li.log pre.body");
  assert.match(structured, /"payment.failed"/, "a map body is pretty-printed");
  assert.match(structured, /\n\s+"order": \{/);
  await shot("trace-logs");
  await Promise.all([page.waitForNavigation(), page.click("li.log a.trace-link >> nth=0")]);
  await ready();
  assert.match(page.url(), new RegExp(`/trace/${data.trace_id}.*span=${data.charge_span}`));
  assert.ok(await page.$(`.span-row.selected[data-span="${data.charge_span}"]`));
  await page.goBack();
  await ready();
  assert.match(page.url(), /\/logs\?trace_id=/);

  step("logs newest first by their own time, as SQL orders them, whenever they were observed");
  await goto("/logs");
  const times = await page.$$eval("li.log", (items) => items.map((i) => i.dataset.time));
  assert.deepEqual(times, data.sql.log_times);
  const bodies = await page.$$eval("li.log .body", (items) => items.map((i) => i.textContent));
  assert.ok(bodies.indexOf("settlement batch on time") < bodies.indexOf("settlement batch delivered late"), `${bodies}`);

  step("the records per minute stacked by severity, each severity's total as SQL counts it");
  const layers = await page.$$eval("figure.log-volume rect[data-layer]", (rects) => {
    const sums = {};
    for (const r of rects) sums[r.dataset.layer] = (sums[r.dataset.layer] || 0) + Number(r.dataset.count);
    return sums;
  });
  assert.deepEqual(layers, data.sql.log_severities, "the bars' layers add up to SQL's count per severity");
  const legend = Object.fromEntries(await page.$$eval("p.severities a.severity", (as) =>
    as.map((a) => [a.dataset.severity, Number(a.querySelector(".count").textContent)])));
  assert.deepEqual(legend, data.sql.log_severities);
  step("facets: the services and attribute values of the matching records, a click filters by one");
  assert.match(await page.textContent("aside.facets p.hint"), new RegExp(`^In all ${data.sql.log_times.length} matching records`));
  const facet = page.locator('aside.facets section[data-key="order.id"] a.facet[data-value="o-17"]');
  assert.equal(Number(await facet.locator(".count").textContent()), data.sql.order_records);
  await Promise.all([page.waitForNavigation(), facet.click()]);
  await ready();
  assert.match(page.url(), /attr=order.id%3Do-17/);
  assert.equal((await page.$$("li.log")).length, data.sql.order_records, "exactly the records of that order");
  await goto("/logs?body=no-such-words-anywhere");
  assert.match(await page.textContent("div.empty[data-empty=nothing-matches]"), /match these filters/, "nothing matches, said apart from nothing stored");
  await Promise.all([page.waitForNavigation(), page.click("div.empty a")]);
  assert.ok((await page.$$("li.log")).length > 0, "the link without the filters finds the records");
  await goto("/logs");
  await Promise.all([page.waitForNavigation(), page.click("p.severities a.severity[data-severity=WARN]")]);
  assert.match(page.url(), /min_severity=13/, "a severity's link searches from it up");

  step("log search by severity and body text, with the matching records per minute");
  await goto("/logs?min_severity=13");
  const warnings = (await page.$$("li.log")).length;
  assert.ok(warnings >= 2);
  const volume = await page.$eval("figure.log-volume", (f) => Number(f.dataset.records));
  assert.equal(volume, warnings, "the histogram counts the records the search shows (from the log rollup)");
  assert.ok((await page.$$("figure.log-volume rect.bar")).length >= 1);
  assert.ok(!(await page.textContent("ol.logs")).includes("health check ok"), "INFO is below WARN");
  await goto("/logs?body=HEALTH");
  assert.match(await page.textContent("ol.logs"), /health check ok/);
  assert.equal((await page.$$("li.log")).length, data.sql.health_records, "whatever the case, as SQL finds them");
  assert.deepEqual(await page.$$eval("li.log .body mark", (m) => m.map((e) => e.textContent)), ["health"], "the match is marked");
  assert.match(await page.textContent("figure.log-volume figcaption"), /counted from the records/);
  await shot("logs");
  await goto("/logs?body=HEALTH&case=1");
  assert.match(await page.textContent("p.empty"), /No log records in the last hour match these filters/, "unless the case must match");

  step("a span whose parent is missing is shown, marked");
  await goto(`/trace/${data.orphan_trace}`);
  assert.match(await page.textContent(".span-row"), /orphan work.*parent missing/s);

  step("its links: the stored trace opens, the other is marked not stored");
  await page.click(".span-row .span-link");
  await page.waitForSelector(".span-details .link");
  assert.match(await page.textContent(".span-details"), new RegExp(`${data.unstored_trace}.*not stored`));
  assert.match(await page.textContent(".span-details .link a"), /frontend: GET \/checkout/, "a stored link names its span's service and name");
  await Promise.all([page.waitForNavigation(), page.click(`.span-details .link a[href^="/trace/${data.trace_id}"]`)]);
  await ready();
  assert.ok(await page.$(".span-row.selected[data-depth='0']"), "the linked span is selected");

  step("metrics: the list, a counter's rate per series, a histogram's percentiles");
  await goto("/metrics");
  const metrics = await page.$$eval("table.metrics tbody tr td:first-child", (cells) => cells.map((c) => c.textContent));
  for (const name of ["shop.orders", "shop.request.duration", "shop.temperature"]) assert.ok(metrics.includes(name), name);
  await Promise.all([page.waitForNavigation(), page.click("text=shop.orders")]);
  await ready();
  const series = await page.$$eval("ul.legend li", (items) => items.map((i) => i.dataset.series));
  assert.deepEqual(series.sort(), ["route=/a", "route=/b"], "one line per series, named by what differs");
  assert.equal(await page.$$eval("svg.lines g.series", (g) => g.length), 2);
  assert.match(await page.textContent("figcaption"), /rate per/);
  const around = `start=${data.metrics_from}&end=${data.metrics_to}`;
  await goto(`/metric?name=shop.orders&step=1s&${around}`);
  assert.ok(await page.isVisible("input[data-absolute=start]"), "an absolute range shows its inputs");
  // In the browser's time zone, on a 24-hour clock (Swedish dates are written YYYY-MM-DD HH:MM:SS).
  const berlin = new Date(data.metrics_from).toLocaleString("sv-SE", { timeZone: "Europe/Berlin" });
  assert.equal(await page.inputValue("input[data-absolute=start]"), berlin, "filled in local time, 24-hour");
  const earlier = Math.floor((data.metrics_from - 60_000) / 1000) * 1000;
  await page.fill("input[data-absolute=start]", new Date(earlier).toLocaleString("sv-SE", { timeZone: "Europe/Berlin" }));
  await Promise.all([page.waitForNavigation(), page.click("form.search button[type=submit]")]);
  await ready();
  assert.equal(new URL(page.url()).searchParams.get("start"), String(earlier), "a typed local time is sent as its instant");
  assert.ok((await page.$$("svg.lines g.series circle")).length >= 8, "a rate per second, step by step");
  await shot("metric-counter");

  step("grouped by an attribute: one line per value, the series of each summed step by step");
  await goto(`/metric?name=shop.orders&step=1s&${around}`);
  const perSeries = await page.$$eval("svg.lines circle", (cs) => cs.map((c) => [Number(c.dataset.t), Number(c.dataset.v)]));
  await goto(`/metric?name=shop.orders&step=1s&${around}&by=service.name`);
  assert.deepEqual(await page.$$eval("ul.legend li", (items) => items.map((i) => i.dataset.series)), ["service.name=frontend"]);
  const grouped = await page.$$eval("svg.lines circle", (cs) => cs.map((c) => [Number(c.dataset.t), Number(c.dataset.v)]));
  const sums = new Map();
  for (const [t, v] of perSeries) sums.set(t, (sums.get(t) ?? 0) + v);
  assert.ok(grouped.length >= 6, `${grouped.length} steps`);
  for (const [t, v] of grouped) assert.ok(Math.abs(v - sums.get(t)) < 1e-9, `step ${t}: ${v}, the routes' sum ${sums.get(t)}`);
  assert.match(await page.textContent("figcaption"), /orders\/s · series summed by service\.name/, "the unit as words");
  assert.ok((await page.$$eval("datalist#group-keys option", (o) => o.map((e) => e.value))).includes("route"), "the keys to group by are offered");
  await goto(`/metric?name=shop.request.duration&step=1s&${around}`);
  const quantiles = await page.$$eval("ul.legend li", (items) => items.map((i) => i.dataset.series));
  assert.deepEqual(quantiles, ["p50", "p95", "p99"]);
  assert.ok((await page.$$("svg.lines g.series circle")).length >= 3, "percentiles over several steps");
  assert.ok((await page.$$("svg.bars rect.bar")).length >= 5, "the latest bucket distribution");
  await shot("metric-histogram");

  step("a histogram whose slowest requests are beyond its top bucket: p95 and p99 from the recorded max");
  await goto(`/metric?name=http.server.request.duration&${around}`);
  const figures = await page.$$eval("dl.whole-range div", (items) =>
    Object.fromEntries(items.map((i) => [i.dataset.quantile, { value: Number(i.dataset.value), reading: i.dataset.reading, text: i.querySelector("dd").textContent }])));
  const { slow_bounds: bounds, slow_counts: counts, slow_min: min, slow_max: max } = data.sql;
  for (const [label, q, truth] of [["p95", 0.95, data.slow_p95], ["p99", 0.99, data.slow_p99]]) {
    const shown = figures[label];
    const expected = interpolated(bounds, counts, min, max, q);
    assert.equal(shown.reading, "Value", `${label} is a figure, not a bound`);
    assert.ok(Math.abs(shown.value - expected) <= 1e-9 * expected, `${label} ${shown.value}, from SQL's buckets ${expected}`);
    assert.ok(shown.value > 10 && shown.value <= max, `${label} ${shown.value} lies beyond the 10 s bound, up to the max ${max}`);
    assert.ok(truth > 10, `${label} of the recorded values, ${truth}, is beyond 10 s too`);
    assert.doesNotMatch(shown.text, /^10(\.0)? s$/, `${label} is not the top bound: ${shown.text}`);
  }
  const barLabels = await page.$$eval("svg.bars text.bucket", (items) => items.map((i) => i.textContent));
  assert.deepEqual(barLabels, [...bounds.map((b) => `≤ ${b}`), `> ${bounds.at(-1)}`], "bucket labels as the bounds were sent");
  await shot("metric-http-duration");
  await goto(`/metric?name=http.server.request.duration&${around}&by=http.route&q=p99`);
  const group = await page.$eval("table.groups tbody tr", (r) => ({ group: r.dataset.group, values: Array.from(r.querySelectorAll("td[data-value]"), (td) => Number(td.dataset.value)) }));
  assert.equal(group.group, "http.route=/slow");
  assert.deepEqual(group.values, ["p50", "p95", "p99"].map((q) => figures[q].value), "a group's percentiles from its buckets, as the whole range's");
  assert.deepEqual(await page.$$eval("ul.legend li", (items) => items.map((i) => i.dataset.series)), ["http.route=/slow"]);
  await goto("/metric?name=shop.temperature&agg=max");
  assert.equal(await page.$$eval("svg.lines g.series", (g) => g.length), 1);

  step("times in the browser's time zone, UTC on hover");
  await goto(`/trace/${data.trace_id}`);
  const time = await page.$eval("dd time", (t) => ({ text: t.textContent, title: t.title }));
  assert.match(time.title, / UTC$/);
  assert.ok(!time.text.endsWith("UTC"), "shown in local time");

  step("empty and error states say what happened");
  await goto("/traces?service=nobody");
  assert.match(await page.textContent("p.empty"), /No trace in the last hour matches/);
  await goto("/traces?range=5m&min_duration=soon");
  assert.match(await page.textContent(".error"), /min_duration/);
  expectedFailures.add(`/trace/${"0".repeat(31)}1`);
  const missing = await goto(`/trace/${"0".repeat(31)}1`);
  assert.equal(missing.status(), 404);
  assert.match(await page.textContent(".error"), /No trace/);

  step(`a trace of ${data.big_spans} spans`);
  const started = Date.now();
  await goto(`/trace/${data.big_trace}`);
  const loaded = Date.now() - started;
  const count = await page.$$eval(".span-row", (r) => r.length);
  assert.equal(count, data.big_spans, "every span is on the timeline");
  const paint = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return { response: Math.round(nav.responseEnd - nav.startTime), interactive: Math.round(nav.domContentLoadedEventEnd - nav.startTime) };
  });
  // Timed inside the page, from the click to the next frame after the change (layout included).
  const collapse = await page.evaluate(async () => {
    const started = performance.now();
    document.querySelector(".span-row[data-depth='0'] .toggle").click();
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    return Math.round(performance.now() - started);
  });
  assert.equal(await page.$$eval(".span-row:not([hidden])", (r) => r.length), 1, "collapsed to the root");
  const expand = await page.evaluate(async () => {
    const started = performance.now();
    document.querySelector(".span-row[data-depth='0'] .toggle").click();
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    return Math.round(performance.now() - started);
  });
  const click = await page.evaluate(async () => {
    const details = document.getElementById("details");
    const started = performance.now();
    const changed = new Promise((done) => new MutationObserver(done).observe(details, { childList: true }));
    document.querySelector(".span-row[data-depth='0'] .span-link").click();
    await changed;
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    return Math.round(performance.now() - started);
  });
  assert.match(await page.textContent(".span-details h2"), /nightly batch/);
  await shot("trace-5000");

  step("at 1024 px, a span far down the timeline has its details in view beside it");
  await page.setViewportSize({ width: 1024, height: 768 });
  const last = await page.$eval(".span-row:last-child", (r) => r.dataset.span);
  await goto(`/trace/${data.big_trace}?span=${last}`);
  await page.waitForSelector(`section.span-details[data-span="${last}"]`);
  const placement = await page.evaluate(() => {
    const heading = document.querySelector("#details .span-details h2").getBoundingClientRect();
    const row = document.querySelector(".span-row.selected").getBoundingClientRect();
    return { top: heading.top, left: heading.left, rowTop: row.top, height: innerHeight };
  });
  assert.ok(placement.top >= 0 && placement.top < placement.height / 2, `details in view: ${JSON.stringify(placement)}`);
  assert.ok(placement.rowTop >= 0 && placement.rowTop < placement.height, "and the selected row too");
  assert.ok(placement.left > 500, "beside the timeline, not below it");
  await shot("trace-5000-1024px");

  step("the divider between names and bars is dragged to widen the names");
  const before = await page.$eval(".span-row .label", (l) => l.getBoundingClientRect().width);
  const handle = await page.$eval(".divider", (d) => { const b = d.getBoundingClientRect(); return { x: b.x + b.width / 2, y: b.y + b.height / 2 }; });
  await page.mouse.move(handle.x, handle.y);
  await page.mouse.down();
  await page.mouse.move(handle.x + 120, handle.y, { steps: 5 });
  await page.mouse.up();
  const after = await page.$eval(".span-row .label", (l) => l.getBoundingClientRect().width);
  assert.ok(after > before + 100, `names ${before} px wide, then ${after} px`);
  await page.setViewportSize({ width: 1440, height: 900 });
  const render =
    `RENDER ${data.big_spans} spans: page ready ${loaded} ms (server answer ${paint.response} ms, DOM ready ${paint.interactive} ms); ` +
    `collapse ${collapse} ms, expand ${expand} ms; span details ${click} ms`;
  console.log(render);
  writeFileSync(`${shots}/render.txt`, `${render}\n`);
}

// The LLM pages, over calls a real instrumented application sent (tests/e2e/genai_client.py,
// once with OpenTelemetry's GenAI instrumentation and once with OpenInference's); the figures
// expected are SQL's over the stored rows.
async function llmRun(data) {
  step("the LLM overview: calls, tokens and cost in all, and a row per model and service, as SQL sums them");
  await goto("/llm");
  const total = (name) => page.textContent(`dd[data-total=${name}]`);
  assert.equal(await total("calls"), String(data.sql.calls));
  assert.equal((await total("input")).replaceAll(",", ""), String(data.sql.input));
  assert.equal((await total("output")).replaceAll(",", ""), String(data.sql.output));
  const groups = await page.$$eval("table.llm-groups tbody tr", (rows) =>
    rows.map((r) => ({ model: r.dataset.model, service: r.dataset.service, calls: r.children[3].textContent, cost: Number(r.querySelector("[data-cost]").dataset.cost) })));
  assert.equal(groups.length, data.sql.groups.length, JSON.stringify(groups));
  for (const expected of data.sql.groups) {
    const row = groups.find((g) => g.model === expected.model && g.service === expected.service);
    assert.ok(row, `a row for ${expected.model} of ${expected.service}`);
    assert.equal(row.calls, String(expected.calls));
    assert.ok(Math.abs(row.cost - expected.cost) < 1e-12, `${row.cost} against ${expected.cost}`);
  }
  assert.deepEqual(
    await page.$$eval(".red figure.red-chart", (figures) => figures.map((f) => f.dataset.chart)),
    ["cost", "calls", "p95"],
  );
  await shot("llm-overview");

  step("summed per user: a click on \"user\" shows each user's calls and cost, as SQL sums them");
  await page.click("nav.llm-group-by a[data-group=user]");
  await ready();
  assert.match(page.url(), /[?&]group=user/);
  const users = await page.$$eval("table.llm-groups[data-group=user] tbody tr", (rows) =>
    rows.map((r) => ({ user: r.dataset.user, calls: r.children[1].textContent, cost: Number(r.querySelector("[data-cost]").dataset.cost) })));
  assert.equal(users.length, data.sql.users.length, JSON.stringify(users));
  for (const expected of data.sql.users) {
    const row = users.find((u) => u.user === expected.user);
    assert.ok(row, `a row for ${expected.user}`);
    assert.equal(row.calls, String(expected.calls));
    assert.ok(Math.abs(row.cost - expected.cost) < 1e-12, `${row.cost} against ${expected.cost}`);
  }
  await shot("llm-users");
  await goto("/llm");

  step("a model's calls: a click on its row lists them, each with its tokens, cost and links");
  await page.click(`table.llm-groups tr[data-service="${data.genai_service}"] td a`);
  await ready();
  assert.match(page.url(), /\/llm\/calls\?/);
  const listed = await page.$$eval("table.llm-calls tbody tr", (rows) =>
    rows.map((r) => ({ cells: [...r.children].map((c) => c.textContent.trim()), span: r.dataset.span })));
  assert.equal(listed.length, 4, JSON.stringify(listed));
  for (const row of listed) {
    assert.equal(row.cells[4], "1,200");
    assert.equal(row.cells[5], "300");
    assert.equal(row.cells[6], data.sql.call_cost_text);
  }
  await shot("llm-calls");

  step("filters: errors only finds none of them, a user finds the model calls of both applications' traces");
  await goto(`/llm/calls?errors=1`);
  assert.match(await page.textContent("main"), /No LLM calls match/);
  await goto(`/llm/calls?user=user-ada&kind=llm`);
  // OpenInference puts the user on each call, the GenAI application on its agent's span only:
  // a user's calls are those of the traces in which a span carries the id.
  assert.equal(await page.$$eval("table.llm-calls tbody tr", (rows) => rows.length), 8, "four model calls of each application");

  step("a conversation as a chat, from the older per-message events: messages in order, the tool call and its result");
  await goto(`/llm/calls?service=${data.genai_service}&kind=agent`);
  await page.click("table.llm-calls tbody tr td:nth-child(11) a");
  await ready();
  await checkChat(data, "message events", `conv-${data.genai_service}`);
  await shot("llm-conversation");

  step("the same conversation from OpenInference's flattened attributes reads the same");
  await goto(`/llm/conversation?id=${encodeURIComponent(data.openinference_conversation)}`);
  await checkChat(data, "openinference attributes", data.openinference_conversation);

  step("one call alone, from its row's chat link");
  await goto(`/llm/calls?service=${data.genai_service}&kind=llm`);
  const links = await page.$$eval("table.llm-calls tbody tr td.links a:first-child", (a) => a.map((l) => l.getAttribute("href")));
  // Newest first: the third of four is the tool call's.
  await goto(links[2]);
  const one = await page.$$eval("ol.chat li.call", (calls) => calls.length);
  assert.equal(one, 1);
  assert.match(await page.textContent("ol.chat"), /calls get_weather/);

  step("the trace's timeline marks each LLM span with its model, tokens and cost, and opens the chat");
  await page.click("ol.chat li.call .call-head a[href^='/trace/']");
  await ready();
  const marks = await page.$$eval(".span-row", (rows) =>
    rows.map((r) => r.querySelector(".badge.llm")?.textContent.trim()).filter(Boolean));
  assert.deepEqual(marks.filter((m) => m.startsWith("gpt")), Array(4).fill(`gpt-4o-mini-2024-07-18 · 1200 → 300 tokens · ${data.sql.call_cost_text}`));
  assert.deepEqual(marks.filter((m) => !m.startsWith("gpt")), ["agent weather-agent"], "the agent's span is marked too");
  await shot("llm-trace");
  await page.click("#trace-llm");
  await ready();
  assert.equal(await page.$$eval("ol.chat li.call[data-kind=llm]", (c) => c.length), 4);
}

// The chat of the application's conversation: what each model call was sent and answered,
// earlier messages not repeated.
async function checkChat(data, source, conversation) {
  const calls = await page.$$eval("ol.chat li.call[data-kind=llm]", (calls) =>
    calls.map((c) => ({
      // Each message as "role: part part", a part's pieces joined by a space.
      messages: [...c.querySelectorAll(".msg")].map((m) => {
        const parts = [...m.children].filter((p) => !p.classList.contains("role")).map((p) =>
          [...p.childNodes].map((n) => n.textContent.replace(/\s+/g, " ").trim()).filter(Boolean).join(" "));
        return `${m.dataset.role}: ${parts.join(" | ")}`;
      }),
      source: c.querySelector(".source")?.textContent,
      repeated: c.querySelector(".repeated")?.textContent ?? "",
    })));
  assert.equal(calls.length, 4, JSON.stringify(calls));
  for (const call of calls) assert.equal(call.source, `messages from ${source}`);
  const text = calls.map((c) => c.messages);
  assert.deepEqual(text[0], ["system: You are a terse assistant.", "user: Say hello.", "assistant: Bonjour! How can I help?"]);
  assert.equal(calls[1].repeated, "1 earlier message(s) not repeated");
  assert.equal(text[1][0], "user: What is the weather in Paris?");
  assert.match(text[1][1], /^assistant: calls get_weather call_weather_1 \{"city": ?"Paris"\}$/);
  assert.equal(text[1].length, 2);
  assert.equal(calls[2].repeated, "3 earlier message(s) not repeated");
  assert.deepEqual(text[2], ['tool: result of call_weather_1 {"weather": "sunny, 21 C"}', "assistant: In Paris it is sunny, 21 C."]);
  assert.deepEqual(text[3], ["user: Tell me a story.", "assistant: Once upon a time."]);
  const sums = await page.textContent("p.llm-sums");
  const cost = data.sql.conversation_cost_texts[conversation];
  assert.ok(sums.includes(cost), `the conversation's cost as SQL sums it: ${cost} in ${sums}`);
}

// The quantile a histogram's buckets give by linear interpolation inside the bucket that holds
// it, each bucket narrowed to the recorded min and max (the first bucket starts at 0).
function interpolated(bounds, counts, min, max, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] > 0 && below + counts[i] >= rank) {
      let lower = i === 0 ? 0 : bounds[i - 1];
      let upper = i < bounds.length ? bounds[i] : Infinity;
      if (min > lower && min <= upper) lower = min;
      if (max < upper && max >= lower) upper = max;
      return lower + (upper - lower) * ((rank - below) / counts[i]);
    }
    below += counts[i];
  }
  return NaN;
}
