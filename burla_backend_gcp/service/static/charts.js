// Line charts as inline SVG, with no library: BurlaCharts.line(container, options).
//   options.series: [{name, cls, points: [[x, y], ...]}]  (x: seconds, y: a number)
//   options.yMax (default: the data's), options.yUnit ("%", ""), options.xLabel
// The chart is redrawn whole each time (a few hundred points at most: the service thins them).
"use strict";

const BurlaCharts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 1000, H = 270, LEFT = 48, RIGHT = 12, TOP = 30, BOTTOM = 30;

  function node(tag, attrs, text) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function duration(seconds) {
    if (seconds < 10) return `${(Math.round(seconds * 10) / 10)}s`;
    if (seconds < 90) return `${Math.round(seconds)}s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
    return `${(seconds / 3600).toFixed(1)}h`;
  }

  function line(container, options) {
    const series = (options.series || []).filter((s) => s.points && s.points.length);
    container.textContent = "";
    const svg = node("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img",
                             "aria-label": options.label || "chart"});
    if (!series.length) {
      svg.appendChild(node("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"},
                           options.empty || "No data yet"));
      container.appendChild(svg);
      return svg;
    }
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1]));
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const yMax = options.yMax || niceMax(Math.max(...ys));
    const px = (x) => LEFT + ((x - x0) / (x1 - x0)) * (W - LEFT - RIGHT);
    const py = (y) => TOP + (1 - y / yMax) * (H - TOP - BOTTOM);
    for (let i = 0; i <= 4; i++) {
      const y = (yMax * i) / 4;
      svg.appendChild(node("line", {x1: LEFT, x2: W - RIGHT, y1: py(y), y2: py(y), class: "grid"}));
      const label = `${Number.isInteger(y) ? y : y.toFixed(1)}${options.yUnit || ""}`;
      svg.appendChild(node("text", {x: LEFT - 6, y: py(y) + 4, "text-anchor": "end", class: "tick"}, label));
    }
    for (let i = 0; i <= 4; i++) {
      const x = x0 + ((x1 - x0) * i) / 4;
      svg.appendChild(node("text", {x: px(x), y: H - 10, "text-anchor": "middle", class: "tick"},
                           duration(x - x0)));
    }
    series.forEach((s, i) => {
      const points = s.points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(node("polyline", {points, class: `series ${s.cls || "s" + i}`}));
      if (s.points.length <= 40) {  // few points: show each (one alone draws no line)
        for (const p of s.points) {
          svg.appendChild(node("circle", {cx: px(p[0]).toFixed(1), cy: py(p[1]).toFixed(1), r: 3,
                                          class: `dot ${s.cls || "s" + i}`}));
        }
      }
      svg.appendChild(node("text", {x: LEFT + i * 140, y: 14, class: `legend ${s.cls || "s" + i}`}, s.name));
    });
    container.appendChild(svg);
    return svg;
  }

  return {line, duration};
})();
