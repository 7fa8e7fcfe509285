// Keys (admins only): every key issued, a new one issued, one revoked, over the manager's
// GET/POST /auth/keys and POST /auth/keys/{id}/revoke. A key is shown once, in the answer
// that issues it: the manager keeps only its id, and so does this page (the secret is in
// the page until the view is left, never stored). A user is not offered the view, and the
// manager refuses them anyway (403).

import { ApiError, claims, request } from "./api.js";
import { ago, fill, h } from "./dom.js";

const DAY_S = 86400;

/**
 * @param {HTMLElement} root
 * @returns {() => void} stops the view
 */
export function showKeys(root) {
  const body = h("tbody");
  const message = h("p", { className: "error", id: "keys-message" });
  const issued = h("div", { id: "issued" });
  fill(
    root,
    issueForm(),
    issued,
    h("div", { className: "row" }, h("h2", {}, "Keys")),
    message,
    h("table", { id: "keys" }, h("thead", {}, h("tr", {}, ["ID", "User", "Role", "Issued", "Expires", "State", ""].map((t) => h("th", {}, t)))), body),
  );
  let stopped = false;

  async function load() {
    try {
      const { keys } = await request("GET", "/auth/keys");
      if (stopped) return;
      message.textContent = "";
      fill(body, keys.length ? [...keys].reverse().map(row) : h("tr", {}, h("td", { colSpan: 7, className: "muted" }, "No keys.")));
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  /** A key's row, newest first. @param {any} key */
  function row(key) {
    const state = key.revoked_at
      ? h("span", { className: "badge canceled", title: new Date(key.revoked_at * 1000).toLocaleString() }, "revoked")
      : key.expires_at * 1000 <= Date.now()
        ? h("span", { className: "badge failed" }, "expired")
        : h("span", { className: "badge completed" }, "valid");
    const revoke = key.revoked_at
      ? null
      : h("button", { type: "button", className: "revoke", onclick: () => revokeKey(key) }, "Revoke");
    return h(
      "tr",
      { dataset: { key: key.id, user: key.user } },
      h("td", {}, h("code", {}, key.id), key.id === claims()?.key ? h("span", { className: "muted", title: "this tab's token was bought with it" }, " (this tab)") : null),
      h("td", {}, key.user),
      h("td", {}, key.role),
      h("td", { title: new Date(key.issued_at * 1000).toLocaleString() }, ago(key.issued_at)),
      h("td", {}, new Date(key.expires_at * 1000).toLocaleDateString()),
      h("td", {}, state),
      h("td", {}, revoke),
    );
  }

  /** @param {any} key */
  async function revokeKey(key) {
    if (!confirm(`Revoke ${key.user}'s key ${key.id}? Its tokens stop working at once, and its tabs are signed out.`)) return;
    try {
      await request("POST", `/auth/keys/${encodeURIComponent(key.id)}/revoke`);
      load();
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  function issueForm() {
    const user = h("input", { id: "key-user", name: "user", placeholder: "alice", required: true, size: 14 });
    const role = h("select", { id: "key-role", name: "role" }, h("option", { value: "user" }, "user"), h("option", { value: "admin" }, "admin"));
    const days = h("input", { id: "key-days", name: "days", type: "number", min: "1", max: "3650", value: "365", size: 5 });
    const outcome = h("span", { className: "error", id: "issue-outcome" });
    const form = h(
      "form",
      { className: "card submit", id: "issue" },
      h(
        "div",
        { className: "row" },
        h("label", {}, "user", user),
        h("label", {}, "role", role),
        h("label", {}, "days", days),
        h("button", { type: "submit", className: "primary" }, "Issue a key"),
      ),
      outcome,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      outcome.textContent = "";
      try {
        const key = await request("POST", "/auth/keys", { user: user.value.trim(), role: role.value, ttl_s: Math.round(Number(days.value) * DAY_S) });
        user.value = "";
        showSecret(key);
        load();
      } catch (error) {
        outcome.textContent = error instanceof ApiError ? `${error.doc?.field ?? ""}: ${error.message}` : String(error);
      }
    });
    return form;
  }

  /** The key itself, once: the manager does not keep it. @param {any} key */
  function showSecret(key) {
    const secret = h("textarea", { id: "issued-key", readOnly: true, rows: 3, spellcheck: false, value: key.key });
    const copied = h("span", { className: "muted", id: "issued-copied" });
    const copy = h("button", { type: "button", id: "copy-key" }, "Copy");
    copy.addEventListener("click", async () => {
      secret.select();
      try {
        await navigator.clipboard.writeText(key.key);
        copied.textContent = "copied";
      } catch {
        copied.textContent = "selected: press Ctrl+C (or ⌘C) to copy";
      }
    });
    const done = h("button", { type: "button", id: "issued-done" }, "Done");
    done.addEventListener("click", () => fill(issued));
    fill(
      issued,
      h(
        "div",
        { className: "card secret" },
        h("h2", {}, `A key for ${key.user} (${key.role})`),
        h("p", {}, h("strong", {}, "Copy it now: it is shown only once. "), "The manager keeps its id, not the key; give it to its holder, who signs in with it (or runs herder with it)."),
        secret,
        h("div", { className: "row" }, copy, copied, h("span", { className: "spacer" }), done),
      ),
    );
    secret.select();
  }

  load();
  return () => {
    stopped = true;
  };
}
