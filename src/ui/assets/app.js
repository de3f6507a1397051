// otelephant's web UI: the little the pages need that HTML cannot do by itself.
// - times in the browser's time zone (the page carries UTC; hovering still shows it);
// - the time range's absolute inputs, read and written in local time, sent as milliseconds;
// - one more attribute filter input;
// - the trace timeline: collapsing subtrees, and a span's details without reloading the trace,
//   with the span in the URL so that back, reload and shared links show it again;
// - the trace minimap: drag to zoom the timeline, the zoom kept in the URL;
// - the traces scatter plot: drag to search a stretch of time and durations.
"use strict";

const pad = (n, width = 2) => String(n).padStart(width, "0");

function localText(ms, format) {
  const d = new Date(ms);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (format === "time") return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}.${pad(d.getMilliseconds(), 3)}`;
}

function localTimes(root) {
  for (const el of root.querySelectorAll("[data-ms]")) {
    el.textContent = localText(Number(el.dataset.ms), el.dataset.format);
  }
}

// 24-hour local time, as the absolute range inputs show it.
function toInputValue(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// Milliseconds of a local time typed as the inputs show it ("T" between date and time too).
function fromInputValue(text) {
  return new Date(text.trim().replace(" ", "T")).getTime();
}

function rangeForms() {
  for (const select of document.querySelectorAll("[data-range-preset]")) {
    const form = select.form;
    const absolute = form.querySelector(".absolute");
    const hidden = (name) => form.querySelector(`input[type=hidden][name=${name}]`);
    const input = (name) => form.querySelector(`[data-absolute=${name}]`);
    for (const name of ["start", "end"]) {
      if (hidden(name).value) input(name).value = toInputValue(Number(hidden(name).value));
      input(name).addEventListener("input", () => input(name).setCustomValidity(""));
    }
    select.addEventListener("change", () => {
      absolute.hidden = select.value !== "";
      if (select.value === "" && !input("start").value) {
        const now = Date.now();
        input("start").value = toInputValue(now - 3600e3);
        input("end").value = toInputValue(now);
      }
    });
    form.addEventListener("submit", (event) => {
      for (const name of ["start", "end"]) {
        const value = select.value === "" ? input(name).value : "";
        const ms = value ? fromInputValue(value) : NaN;
        if (value && Number.isNaN(ms)) {
          input(name).setCustomValidity("a local time: YYYY-MM-DD HH:MM:SS");
          input(name).reportValidity();
          event.preventDefault();
          return;
        }
        hidden(name).value = value ? String(ms) : "";
        // Empty fields stay out of the URL.
        hidden(name).disabled = !hidden(name).value;
      }
      select.disabled = select.value === "";
      for (const field of form.querySelectorAll("input[type=text], input[type=number], select")) {
        if (!field.value) field.disabled = true;
      }
    });
  }
}

function attributeInputs() {
  for (const button of document.querySelectorAll("[data-add-attr]")) {
    button.addEventListener("click", () => {
      const input = document.createElement("input");
      input.type = "text";
      input.name = "attr";
      input.placeholder = "key=value";
      button.before(input);
      input.focus();
    });
  }
}

// Rows follow each other depth first, so a span's subtree is the rows after it that are deeper.
// Only that subtree is touched: a row stays hidden under a collapsed ancestor.
function applyCollapsed(rows, index) {
  const top = Number(rows[index].dataset.depth);
  let hideDeeperThan = rows[index].classList.contains("collapsed") ? top : Infinity;
  for (let i = index + 1; i < rows.length; i++) {
    const row = rows[i];
    const depth = Number(row.dataset.depth);
    if (depth <= top) break;
    if (depth <= hideDeeperThan) hideDeeperThan = Infinity;
    const hidden = depth > hideDeeperThan;
    if (row.hidden !== hidden) row.hidden = hidden;
    if (!hidden && row.classList.contains("collapsed")) hideDeeperThan = depth;
  }
}

// Ids come from the URL and the page; only hex of the right length is ever put into a path.
const TRACE_ID = /^[0-9a-f]{32}$/;
const SPAN_ID = /^[0-9a-f]{16}$/;

function timeline() {
  const view = document.querySelector(".trace-view");
  if (!view || !TRACE_ID.test(view.dataset.trace)) return;
  const rows = Array.from(view.querySelectorAll(".span-row"));
  const position = new Map(rows.map((row, i) => [row, i]));
  const byId = new Map(rows.map((row) => [row.dataset.span, row]));
  const details = document.getElementById("details");
  const traceId = view.dataset.trace;

  view.addEventListener("click", (event) => {
    const toggle = event.target.closest(".toggle");
    if (toggle) {
      const row = toggle.closest(".span-row");
      const collapsed = row.classList.toggle("collapsed");
      toggle.textContent = collapsed ? "▸" : "▾";
      toggle.setAttribute("aria-expanded", String(!collapsed));
      toggle.setAttribute("aria-label", collapsed ? "expand" : "collapse");
      applyCollapsed(rows, position.get(row));
      return;
    }
    const row = event.target.closest(".span-row");
    if (!row || event.target.closest("#details")) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    const url = new URL(location.href);
    url.searchParams.set("span", row.dataset.span);
    history.pushState({ span: row.dataset.span }, "", url);
    showSpan(row.dataset.span);
  });

  function say(text, className) {
    const box = document.createElement(className === "hint" ? "p" : "div");
    box.className = className;
    if (className === "error") box.setAttribute("role", "alert");
    box.textContent = text;
    details.replaceChildren(box);
  }

  // Only a span of this trace's timeline is fetched, and only the details fragment this server
  // renders (its own HTML, escaped) goes into the page.
  async function showSpan(spanId) {
    view.querySelector(".span-row.selected")?.classList.remove("selected");
    if (!spanId || !SPAN_ID.test(spanId) || !byId.has(spanId)) {
      say("Click a span to see its attributes, events and links.", "hint");
      return;
    }
    byId.get(spanId).classList.add("selected");
    details.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(`/trace/${traceId}/span/${spanId}`, { credentials: "same-origin", redirect: "error" });
      const type = response.headers.get("content-type") ?? "";
      if (!type.startsWith("text/html") || response.headers.get("x-otelephant-fragment") !== "span-details") {
        throw new Error(`unexpected answer (${response.status})`);
      }
      details.innerHTML = await response.text();
    } catch (err) {
      say(`The span's details could not be loaded: ${err.message ?? err}`, "error");
    }
    details.removeAttribute("aria-busy");
    localTimes(details);
  }

  window.addEventListener("popstate", () => {
    showSpan(new URL(location.href).searchParams.get("span"));
  });
  // The divider between names and bars is dragged to give long names room.
  const divider = view.querySelector(".divider");
  divider?.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    divider.setPointerCapture(event.pointerId);
    const box = view.querySelector(".timeline").getBoundingClientRect();
    const move = (e) => {
      const width = Math.min(Math.max(e.clientX - box.left, 120), box.width - 160);
      view.style.setProperty("--label-width", `${Math.round(width)}px`);
    };
    const up = () => {
      divider.removeEventListener("pointermove", move);
      divider.removeEventListener("pointerup", up);
    };
    divider.addEventListener("pointermove", move);
    divider.addEventListener("pointerup", up);
  });
  const selected = view.querySelector(".span-row.selected");
  if (selected) selected.scrollIntoView({ block: "center" });
}

// Three significant digits, as the server writes durations.
function significant(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function durationText(nanos) {
  const n = Math.round(nanos);
  if (n < 1e3) return `${n} ns`;
  if (n < 1e6) return `${significant(n / 1e3)} µs`;
  if (n < 1e9) return `${significant(n / 1e6)} ms`;
  if (n < 60e9) return `${significant(n / 1e9)} s`;
  return `${Math.floor(n / 60e9)}m ${Math.floor(n / 1e9) % 60}s`;
}

// A zoom in the URL: two fractions of the trace's duration, "0.2500-0.5000".
const ZOOM = /^(0(?:\.\d{1,6})?|1(?:\.0{1,6})?)-(0(?:\.\d{1,6})?|1(?:\.0{1,6})?)$/;

// The minimap above the timeline: dragging across it zooms every bar, the ruler and the
// durations into that stretch of the trace (the bars are SVG drawn over 0-1000, so a zoom is a
// viewBox); a click without a drag shows the whole trace again. The zoom is kept in the URL.
function minimap() {
  const view = document.querySelector(".trace-view");
  const map = view?.querySelector(".track.minimap");
  if (!map) return;
  const brush = map.querySelector(".brush");
  const total = Number(view.dataset.duration);
  const bars = view.querySelectorAll(".span-row .track svg");
  const durations = view.querySelectorAll(".span-row .dur");
  const ticks = view.querySelectorAll(".ruler .track span");
  function apply(a, b) {
    const whole = a <= 0 && b >= 1;
    const viewBox = `${(a * 1000).toFixed(3)} 0 ${((b - a) * 1000).toFixed(3)} 10`;
    for (const svg of bars) svg.setAttribute("viewBox", viewBox);
    for (const d of durations) {
      const at = (Number(d.dataset.at) - a) / (b - a);
      d.style.left = `${(at * 100).toFixed(2)}%`;
      d.hidden = at < 0 || at > 1.001;
    }
    ticks.forEach((tick, i) => { tick.textContent = durationText(total * (a + ((b - a) * i) / 4)); });
    brush.hidden = whole;
    brush.style.left = `${a * 100}%`;
    brush.style.width = `${(b - a) * 100}%`;
    view.dataset.zoom = whole ? "" : `${a.toFixed(4)}-${b.toFixed(4)}`;
  }
  function remember() {
    const url = new URL(location.href);
    if (view.dataset.zoom) url.searchParams.set("zoom", view.dataset.zoom);
    else url.searchParams.delete("zoom");
    history.replaceState(history.state, "", url);
  }
  const fraction = (event) => {
    const box = map.getBoundingClientRect();
    return Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
  };
  map.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    map.setPointerCapture(event.pointerId);
    const from = fraction(event);
    brush.hidden = false;
    const move = (e) => {
      const to = fraction(e);
      brush.style.left = `${Math.min(from, to) * 100}%`;
      brush.style.width = `${Math.abs(to - from) * 100}%`;
    };
    const up = (e) => {
      map.removeEventListener("pointermove", move);
      map.removeEventListener("pointerup", up);
      const to = fraction(e);
      if (Math.abs(to - from) < 0.005) apply(0, 1);
      else apply(Math.min(from, to), Math.max(from, to));
      remember();
    };
    map.addEventListener("pointermove", move);
    map.addEventListener("pointerup", up);
  });
  const zoom = ZOOM.exec(new URL(location.href).searchParams.get("zoom") ?? "");
  if (zoom && Number(zoom[1]) < Number(zoom[2])) apply(Number(zoom[1]), Number(zoom[2]));
}

// The traces page's scatter plot: a drag across it searches the stretch of time and the
// durations it covers (the plot says what its edges stand for); a click on a point still opens
// its trace.
function scatterSelect() {
  const svg = document.querySelector("svg.scatter[data-plot]");
  if (!svg) return;
  const [left, top, right, bottom] = svg.dataset.plot.split(" ").map(Number);
  const from = Number(svg.dataset.from);
  const to = Number(svg.dataset.to);
  const highest = Number(svg.dataset.top);
  const box = svg.querySelector("rect.selection");
  const local = (event) => {
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(svg.getScreenCTM().inverse());
    return { x: Math.min(Math.max(point.x, left), right), y: Math.min(Math.max(point.y, top), bottom) };
  };
  svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    const start = local(event);
    let dragging = false;
    const move = (e) => {
      const now = local(e);
      if (!dragging && Math.hypot(now.x - start.x, now.y - start.y) < 6) return;
      if (!dragging) {
        dragging = true;
        svg.setPointerCapture(e.pointerId);
      }
      box.setAttribute("x", Math.min(start.x, now.x));
      box.setAttribute("y", Math.min(start.y, now.y));
      box.setAttribute("width", Math.abs(now.x - start.x));
      box.setAttribute("height", Math.abs(now.y - start.y));
      box.setAttribute("visibility", "visible");
    };
    const up = (e) => {
      svg.removeEventListener("pointermove", move);
      svg.removeEventListener("pointerup", up);
      if (!dragging) return;
      const end = local(e);
      const time = (x) => from + ((x - left) / (right - left)) * (to - from);
      const duration = (y) => ((bottom - y) / (bottom - top)) * highest;
      const url = new URL(location.href);
      for (const name of ["range", "page_token", "order"]) url.searchParams.delete(name);
      url.searchParams.set("start", String(Math.floor(time(Math.min(start.x, end.x)) / 1e6)));
      url.searchParams.set("end", String(Math.ceil(time(Math.max(start.x, end.x)) / 1e6)));
      url.searchParams.set("min_duration", `${(duration(Math.max(start.y, end.y)) / 1e6).toFixed(3)}ms`);
      url.searchParams.set("max_duration", `${(duration(Math.min(start.y, end.y)) / 1e6).toFixed(3)}ms`);
      location.assign(url);
    };
    svg.addEventListener("pointermove", move);
    svg.addEventListener("pointerup", up);
  });
  // A drag that began on a point is a selection, not a click on the point.
  svg.addEventListener("click", (event) => {
    if (box.getAttribute("visibility") === "visible") event.preventDefault();
  }, true);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  rangeForms();
  attributeInputs();
  timeline();
  minimap();
  scatterSelect();
  document.documentElement.dataset.ready = "true";
});
