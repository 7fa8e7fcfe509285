// The agent's own page (served at the agent's /ui/): its processes and pools, live.
// Filled in by the modules beside this one; main.js hands over when about.json says
// the page is served by an agent.

import { fill, h } from "../dash/dom.js";

/**
 * @param {HTMLElement} root
 * @param {{daemon: string, version: string}} served
 */
export function showAgent(root, served) {
  fill(root, h("div", { className: "card", id: "agent" }, h("h2", {}, `herder ${served.version}: an agent`)));
}
