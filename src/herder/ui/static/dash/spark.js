// A sparkline: the last samples of a figure as a polyline in a small SVG, scaled to
// the larger of their maximum (with some headroom) and `floor`, so that a quiet host looks
// quiet and a busy one is not pinned to the top edge.

import { svg } from "./dom.js";

const WIDTH = 120;
const HEIGHT = 28;

/**
 * @param {number[]} values oldest first
 * @param {{floor?: number, title?: string}} [options]
 * @returns {SVGElement}
 */
export function sparkline(values, { floor = 1, title = "" } = {}) {
  const el = svg("svg", { class: "spark", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
  if (title) {
    const label = svg("title");
    label.textContent = title;
    el.append(label);
  }
  el.append(svg("line", { x1: 0, y1: HEIGHT - 1, x2: WIDTH, y2: HEIGHT - 1 }));
  if (values.length === 0) return el;
  const top = Math.max(floor, Math.max(...values) * 1.25);
  const step = values.length > 1 ? WIDTH / (values.length - 1) : 0;
  const points = values.map((v, i) => {
    const x = values.length > 1 ? i * step : WIDTH;
    const y = HEIGHT - 1 - (v / top) * (HEIGHT - 3);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  if (points.length === 1) points.unshift(`0,${points[0].split(",")[1]}`);
  el.append(svg("polyline", { points: points.join(" ") }));
  return el;
}
