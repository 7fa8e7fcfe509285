// Sign-in: a key (herder keys issue) buys an access token; the key itself is not kept.

import { signIn } from "./api.js";
import { fill, h } from "./dom.js";

/**
 * @param {HTMLElement} root
 * @param {string} why shown above the form (the reason for a sign-out), or ""
 * @param {() => void} done called once signed in
 * @param {string} [auth] what the manager takes (about.json): "secret" asks for the shared secret
 */
export function showSignIn(root, why, done, auth = "keys") {
  const key = h("textarea", { id: "key", name: "key", placeholder: "eyJhbGciOiJFZERTQSIs…", autocomplete: "off", spellcheck: false, required: true });
  const error = h("p", { className: "error", id: "signin-error" });
  const button = h("button", { type: "submit", className: "primary" }, "Sign in");
  const form = h(
    "form",
    { className: "card signin", id: "signin" },
    h("h2", {}, "Sign in"),
    why ? h("p", { className: "error", id: "signed-out" }, why) : null,
    h(
      "p",
      { className: "muted" },
      auth === "secret"
        ? "Paste the manager's shared secret (its --auth-token-file). It is kept in this tab only, until it closes."
        : "Paste your key (herder keys issue). It buys a token for this tab only; the key is not kept.",
    ),
    key,
    h("div", { className: "row" }, button),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.textContent = "";
    try {
      await signIn(key.value);
      key.value = "";
      done();
    } catch (e) {
      error.textContent = e instanceof Error ? e.message : String(e);
    } finally {
      button.disabled = false;
    }
  });
  fill(root, form);
  key.focus();
}
