// Keys and projects (admin): create a key (its secret shown once, here), list and revoke
// keys; create projects; set a project's or a key's limits.
import { api, fill, h, say, section, table, when } from "../console.js";

let keys = [];
let projects = [];

function state(key) {
  if (key.revoked_at) return `revoked ${when(key.revoked_at)} by ${key.revoked_by ?? ""}`;
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return "expired";
  return "active";
}

function limitsText(limits) {
  const entries = Object.entries(limits ?? {});
  return entries.length ? entries.map(([name, value]) => `${name} ${value}`).join(", ") : "unlimited";
}

function fillTargets() {
  fill(
    "limits-target",
    projects.map((p) => h("option", { value: `project:${p.name}` }, `project ${p.name}`)),
    keys.filter((k) => !k.revoked_at).map((k) => h("option", { value: `key:${k.id}` }, `key ${k.name} (${k.prefix})`)),
  );
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
  keys = (await api("/v1/keys")).data;
  fillTargets();
  return table(
    "API keys",
    ["Name", "Key", "Project", "Scopes", "Limits", "Created", "Last used", "State", ""],
    keys.map((key) => [
      key.name,
      `${key.prefix}_…`,
      key.project,
      key.scopes.join(", "),
      limitsText(key.limits),
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

async function listProjects() {
  projects = (await api("/v1/projects")).data;
  fillTargets();
  return table(
    "Projects",
    ["Project", "Description", "Limits", "Created"],
    projects.map((p) => [p.name, p.description, limitsText(p.limits), `${when(p.created_at)} by ${p.created_by}`]),
    "No projects.",
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

document.getElementById("create-project").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const project = await api("/v1/projects", { method: "POST", body: { name: form.get("name"), description: form.get("description") } });
    say(`Project ${project.name} created.`, "ok");
    event.target.reset();
  } catch (error) {
    say(error.message, "error");
  }
  await section("projects", listProjects);
});

document.getElementById("limits-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const [kind, name] = String(form.get("target")).split(/:(.*)/s);
  const limits = {};
  for (const input of event.target.querySelectorAll("input[type=number]")) {
    if (input.value) limits[input.name] = Number(input.value);
  }
  const path = kind === "project" ? `/v1/projects/${encodeURIComponent(name)}/limits` : `/v1/keys/${encodeURIComponent(name)}/limits`;
  try {
    await api(path, { method: "PUT", body: { limits } });
    say(`Limits of ${kind} ${name} set: ${limitsText(limits)}.`, "ok");
  } catch (error) {
    say(error.message, "error");
  }
  await Promise.all([section("projects", listProjects), section("keys", listKeys)]);
});

section("keys", listKeys);
section("projects", listProjects);
