// Ki2API console: time-series plots as hand-written SVG (no library). A plot is drawn into a
// container element: an HTML legend, then an SVG as wide as the container with axes, a few ticks
// and one transparent column per bucket whose <title> is the tooltip. Colours come from CSS
// classes (console.css: .s-requests, .s-errors, ...), so dark mode follows the stylesheet.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const M = { left: 52, right: 14, top: 10, bottom: 26 };

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, String(attrs[k]));
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A round upper bound for the y axis and its tick step (1, 2, 2.5, 5 x 10^n).
  function niceScale(max, ticks, integer) {
    if (!(max > 0)) return integer ? { top: 4, step: 1 } : { top: 1, step: 0.25 };
    const raw = integer ? Math.max(1, max / ticks) : max / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = (integer && raw < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map(function (f) {
      return f * mag;
    }).find(function (s) {
      return s >= raw;
    });
    return { top: step * Math.ceil(max / step), step: step };
  }

  function compact(n) {
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (n / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(n * 100) / 100);
  }

  function legend(series) {
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach(function (s) {
      const item = document.createElement("span");
      item.className = "legend-item";
      const sw = document.createElement("span");
      sw.className = "swatch " + s.cls;
      const label = document.createElement("span");
      label.textContent = s.label;
      item.append(sw, label);
      box.append(item);
    });
    return box;
  }

  function axes(svg, g, spec, scale) {
    const yFmt = spec.yFormat || compact;
    for (let v = 0; v <= scale.top + 1e-9; v += scale.step) {
      const y = g.y(v);
      svg.append(el("line", { x1: M.left, x2: g.w - M.right, y1: y, y2: y, class: "grid" }));
      svg.append(el("text", { x: M.left - 6, y: y + 4, class: "tick tick-y" }, yFmt(v)));
    }
    const n = spec.times.length;
    const want = Math.max(2, Math.min(6, Math.floor((g.w - M.left - M.right) / 90)));
    const every = Math.max(1, Math.ceil(n / want));
    for (let i = 0; i < n; i += every) {
      const x = g.x(i) + g.band / 2;
      svg.append(el("line", { x1: x, x2: x, y1: g.h - M.bottom, y2: g.h - M.bottom + 4, class: "axis" }));
      svg.append(el("text", { x: x, y: g.h - 8, class: "tick tick-x" }, spec.xFormat(spec.times[i])));
    }
    svg.append(el("line", { x1: M.left, x2: g.w - M.right, y1: g.h - M.bottom, y2: g.h - M.bottom, class: "axis" }));
  }

  function bars(svg, g, spec) {
    const pad = Math.min(3, g.band * 0.2);
    spec.series.forEach(function (s) {
      s.values.forEach(function (v, i) {
        if (!(v > 0)) return;
        const y = g.y(v);
        svg.append(el("rect", {
          x: g.x(i) + pad / 2, y: y, width: Math.max(1, g.band - pad),
          height: Math.max(1, g.h - M.bottom - y), class: "bar " + s.cls, rx: 1.5,
        }));
      });
    });
  }

  // The area under one run of points (no nulls inside), faintly filled.
  function area(svg, run, g, cls) {
    if (run.length < 2) return;
    const base = (g.h - M.bottom).toFixed(1);
    const d = "M" + run[0][0].toFixed(1) + " " + base + run.map(function (p) {
      return "L" + p[0].toFixed(1) + " " + p[1].toFixed(1);
    }).join("") + "L" + run[run.length - 1][0].toFixed(1) + " " + base + "Z";
    svg.append(el("path", { d: d, class: "area " + cls }));
  }

  function lines(svg, g, spec) {
    spec.series.forEach(function (s) {
      let d = "";
      let open = false;
      let run = [];
      s.values.forEach(function (v, i) {
        if (v === null || v === undefined) {
          open = false;
          area(svg, run, g, s.cls);
          run = [];
          return;
        }
        const x = g.x(i) + g.band / 2;
        run.push([x, g.y(v)]);
        d += (open ? "L" : "M") + x.toFixed(1) + " " + g.y(v).toFixed(1);
        const alone = (i === 0 || s.values[i - 1] == null) && s.values[i + 1] == null;
        if (alone) svg.append(el("circle", { cx: x, cy: g.y(v), r: 2.5, class: "dot " + s.cls }));
        open = true;
      });
      area(svg, run, g, s.cls);
      if (d) svg.append(el("path", { d: d, class: "line " + s.cls }));
    });
  }

  function tooltips(svg, g, spec) {
    const yFmt = spec.tipFormat || spec.yFormat || compact;
    spec.times.forEach(function (t, i) {
      const parts = [spec.tipTime ? spec.tipTime(t) : spec.xFormat(t)];
      spec.series.forEach(function (s) {
        const v = s.values[i];
        parts.push(s.label + ": " + (v === null || v === undefined ? "—" : yFmt(v)));
      });
      const hit = el("rect", {
        x: g.x(i), y: M.top, width: Math.max(1, g.band), height: g.h - M.top - M.bottom, class: "hit",
      });
      hit.append(el("title", {}, parts.join("\n")));
      svg.append(hit);
    });
  }

  // spec: {kind: "bar"|"line", title, times: [unix s], series: [{label, cls, values}],
  //        xFormat(t), tipTime(t)?, yFormat(v)?, height?, emptyText?}
  function render(container, spec) {
    const width = Math.max(260, Math.floor(container.clientWidth || 600));
    const height = spec.height || 190;
    // Same data, same size: keep the drawing (and the tooltip under the pointer).
    const sig = JSON.stringify([width, height, spec.title, spec.times, spec.series.map(function (s) {
      return [s.label, s.values];
    })]);
    if (container.ki2Sig === sig) return;
    container.ki2Sig = sig;
    let max = 0;
    let total = 0;
    spec.series.forEach(function (s, k) {
      s.values.forEach(function (v) {
        if (v > max) max = v;
        if (k === 0 && v > 0) total += v;
      });
    });
    const scale = niceScale(max, 4, spec.integer);
    const n = Math.max(1, spec.times.length);
    const band = (width - M.left - M.right) / n;
    const g = {
      w: width, h: height, band: band,
      x: function (i) { return M.left + i * band; },
      y: function (v) { return M.top + (height - M.top - M.bottom) * (1 - v / scale.top); },
    };
    const svg = el("svg", {
      viewBox: "0 0 " + width + " " + height, width: width, height: height,
      role: "img", "aria-label": spec.title || "", class: "plot-svg",
    });
    axes(svg, g, spec, scale);
    (spec.kind === "bar" ? bars : lines)(svg, g, spec);
    tooltips(svg, g, spec);
    const nodes = [legend(spec.series), svg];
    if (max === 0 && spec.emptyText) {
      const empty = document.createElement("div");
      empty.className = "plot-empty";
      empty.textContent = spec.emptyText;
      nodes.push(empty);
    }
    container.replaceChildren.apply(container, nodes);
    container.dataset.total = String(total);
    container.dataset.points = String(spec.times.length);
  }

  window.Ki2Plots = { render: render, compact: compact, niceScale: niceScale };
})();
