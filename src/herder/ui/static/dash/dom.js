// Small DOM helpers. Elements are built from properties and text nodes, never from HTML
// strings, so nothing a worker or a task says (hostnames, commands, errors) can inject
// markup; and styles are set through the CSSOM, which the page's CSP allows.

/**
 * An element: `h("td", {className: "num"}, "42")`. Props are element properties;
 * `on*` functions are listeners; `dataset` is merged. Children: nodes, strings, arrays.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [props]
 * @param {...any} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else /** @type {any} */ (el)[name] = value;
  }
  append(el, children);
  return el;
}

/**
 * An SVG element with attributes.
 * @param {string} tag
 * @param {Record<string, string | number>} [attrs]
 * @returns {SVGElement}
 */
export function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

/** @param {Element} el @param {any[]} children */
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. @param {Element} el @param {...any} children */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Listen to several events of one target; the function returned stops them all (a view's end).
 * @param {EventTarget} target
 * @param {Record<string, (event: any) => void>} handlers by event name
 * @returns {() => void}
 */
export function listen(target, handlers) {
  for (const [name, handler] of Object.entries(handlers)) target.addEventListener(name, handler);
  return () => {
    for (const [name, handler] of Object.entries(handlers)) target.removeEventListener(name, handler);
  };
}

/** "3 s", "5 min", "2 h" ago, from Unix seconds. @param {number | null} at */
export function ago(at) {
  if (!at) return "";
  const s = Math.max(0, Date.now() / 1000 - at);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A small bar for a percentage, with its figure. @param {number | undefined} value */
export function meter(value) {
  if (typeof value !== "number") return h("span", { className: "muted" }, "–");
  const bar = h("span");
  bar.style.width = `${Math.max(0, Math.min(100, value))}%`;
  return h("span", {}, h("span", { className: "meter" }, bar), `${value.toFixed(0)}%`);
}
