// Keys (admin): create one (its secret shown once, here), list them, revoke.
import { api, fill, h, say, section, table, when } from "../console.js";

function state(key) {
  if (key.revoked_at) return `revoked ${when(key.revoked_at)} by ${key.revoked_by ?? ""}`;
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return "expired";
  return "active";
}

async function revoke(key) {
  if (!window.confirm(`Revoke key ${key.name} (${key.prefix})? Its sessions end too.`)) return;
  try {
    await api(`/v1/keys/${key.id}/revoke`, { method: "POST" });
    say(`Revoked ${key.prefix}.`, "ok");
  } catch (error) {
    say(error.message, "error");
  }
  await section("keys", listKeys);
}

async function listKeys() {
  const { data } = await api("/v1/keys");
  return table(
    "API keys",
    ["Name", "Key", "Project", "Scopes", "Created", "Last used", "State", ""],
    data.map((key) => [
      key.name,
      `${key.prefix}_…`,
      key.project,
      key.scopes.join(", "),
      `${when(key.created_at)} by ${key.created_by}`,
      when(key.last_used_at),
      state(key),
      key.revoked_at
        ? ""
        : h("button", { type: "button", class: "secondary", "aria-label": `Revoke ${key.name}`, onclick: () => revoke(key) }, "Revoke"),
    ]),
    "No keys.",
  );
}

document.getElementById("create-key").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const expires = form.get("expires_at");
  const body = {
    name: form.get("name"),
    project: form.get("project"),
    scopes: form.getAll("scopes"),
    expires_at: expires ? new Date(expires).toISOString() : null,
  };
  try {
    const created = await api("/v1/keys", { method: "POST", body });
    fill(
      "created",
      h("p", {}, `Key ${created.name} created. Copy it now: it is shown this once and never again.`),
      h("p", { class: "secret", id: "new-key" }, created.key),
    );
    event.target.reset();
    say("Key created.", "ok");
  } catch (error) {
    say(error.message, "error");
  }
  await section("keys", listKeys);
});

section("keys", listKeys);
