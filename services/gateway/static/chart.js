// The price chart of a result: closes over the analysed period with 20- and 50-day moving averages.

const SVG = "http://www.w3.org/2000/svg";

export function movingAverage(values, window) {
  const out = new Array(values.length).fill(null);
  let sum = 0;
  values.forEach((v, i) => {
    sum += v;
    if (i >= window) sum -= values[i - window];
    if (i >= window - 1) out[i] = sum / window;
  });
  return out;
}

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

function path(points) {
  let d = "";
  let pen = false;
  for (const p of points) {
    if (!p) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`;
    pen = true;
  }
  return d;
}

function niceTicks(lo, hi, count = 4) {
  const step = (hi - lo) / count;
  return Array.from({ length: count + 1 }, (_, i) => lo + step * i);
}

/** An <svg> element for `{dates, close}`; null when there is nothing to draw. */
export function priceChart(chart, { width = null, height = 240 } = {}) {
  // The SVG scales to its box, text with it: a phone gets a narrower drawing (and bigger type) so
  // the axis labels still come out ~11 px tall on screen instead of ~6.
  const narrow = (globalThis.innerWidth || 1280) < 600;
  width = width || (narrow ? 360 : 640);
  const fontSize = narrow ? 13 : 11;
  const close = chart?.close || [];
  const dates = chart?.dates || [];
  if (close.length < 2) return null;
  const pad = { left: 48, right: 10, top: 10, bottom: 24 };
  const ma20 = movingAverage(close, 20);
  const ma50 = movingAverage(close, 50);
  const all = [...close, ...ma20.filter((v) => v !== null), ...ma50.filter((v) => v !== null)];
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  const margin = (hi - lo) * 0.06 || 1;
  lo -= margin;
  hi += margin;
  const x = (i) => pad.left + (i / (close.length - 1)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);
  const line = (series) => series.map((v, i) => (v === null ? null : [x(i), y(v)]));

  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `Closing prices from ${dates[0]} to ${dates[dates.length - 1]}` });
  for (const t of niceTicks(lo, hi)) {
    svg.append(el("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t) }));
    svg.append(el("text", { x: pad.left - 6, y: y(t) + 4, "text-anchor": "end", "font-size": fontSize }, t.toFixed(t < 10 ? 2 : 0)));
  }
  const closeLine = path(line(close));
  const base = y(lo);
  svg.append(el("path", { class: "area", d: `${closeLine}L${x(close.length - 1)},${base}L${x(0)},${base}Z` }));
  svg.append(el("path", { class: "close", d: closeLine }));
  svg.append(el("path", { class: "ma20", d: path(line(ma20)) }));
  svg.append(el("path", { class: "ma50", d: path(line(ma50)) }));
  const labels = [[0, "start"], [Math.floor((close.length - 1) / 2), "middle"], [close.length - 1, "end"]];
  for (const [i, anchor] of labels) {
    svg.append(el("text", { x: x(i), y: height - 6, "text-anchor": anchor, "font-size": fontSize }, dates[i] || ""));
  }
  return svg;
}
