// A model: its versions, lineage, a side-by-side comparison, aliases with history, set and
// roll back (the API decides who may; the controls show for keys with models:write).
import { api, fill, h, hasScope, megabytes, say, section, table, when } from "../console.js";

const { name } = JSON.parse(document.body.dataset.values || "{}");
const base = `/v1/registry/models/${encodeURIComponent(name)}`;
let versions = [];

function text(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function keyValues(object) {
  const entries = Object.entries(object ?? {});
  return entries.length === 0 ? "" : h("ul", { class: "plain" }, entries.map(([k, v]) => h("li", {}, `${k}: ${text(v)}`)));
}

async function summary() {
  const model = await api(base);
  return [
    h("p", {}, model.description || h("span", { class: "empty" }, "No description.")),
    keyValues(model.tags),
    h("p", { class: "hint" }, `Project ${model.project} · created ${when(model.created_at)} by ${model.created_by}`),
  ];
}

async function listVersions() {
  versions = (await api(`${base}/versions`)).data;
  for (const id of ["compare-a", "compare-b", "alias-version"]) {
    fill(id, versions.map((v) => h("option", { value: v.version }, `v${v.version}`)));
  }
  if (versions.length > 1) document.getElementById("compare-a").value = versions[versions.length - 2].version;
  if (versions.length > 0) {
    const latest = versions[versions.length - 1].version;
    document.getElementById("compare-b").value = latest;
    document.getElementById("alias-version").value = latest;
  }
  fill("lineage", lineage(versions));
  return table(
    `Versions of ${name}`,
    ["Version", "Task", "Runtime", "Format", "Status", "Size", "Files", "Metrics", "Tags", "Aliases", "Created"],
    versions.map((v) => [
      `v${v.version}`,
      v.task,
      v.runtime,
      v.format,
      v.status,
      megabytes(v.size_bytes),
      v.files.map((f) => f.path).join(", "),
      keyValues(v.metrics),
      keyValues(v.tags),
      v.aliases.join(", "),
      `${when(v.created_at)} by ${v.created_by}`,
    ]),
    "No versions.",
  );
}

// One chain per version: dataset → job → version, base or parent → version.
function lineage(all) {
  const chains = all.map((v) => {
    const steps = [];
    const l = v.lineage;
    if (l.dataset_id) steps.push(h("span", { class: "node" }, `dataset ${l.dataset_id}`));
    if (l.parent_version) steps.push(h("span", { class: "node" }, `v${l.parent_version}`));
    if (l.source && Object.keys(l.source).length) steps.push(h("span", { class: "node" }, `source ${text(l.source.type ?? l.source)}`));
    if (l.job_id) steps.push(h("span", { class: "node" }, `job ${l.job_id}${l.transform ? ` (${l.transform})` : ""}`));
    else if (l.transform) steps.push(h("span", { class: "node" }, l.transform));
    steps.push(h("span", { class: "node version" }, `${name} v${v.version}`));
    const linked = steps.flatMap((step, i) => (i === 0 ? [step] : [h("span", { class: "arrow", "aria-hidden": "true" }, "→"), step]));
    return h("li", { class: "chain" }, linked);
  });
  return h("ul", { class: "lineage" }, chains);
}

function row(label, a, b) {
  const differs = text(a) !== text(b);
  return h("tr", { class: differs ? "diff" : null }, h("th", { scope: "row" }, label), h("td", {}, text(a)), h("td", {}, text(b)));
}

async function compare(a, b) {
  const [va, vb, diff] = await Promise.all([
    api(`${base}/versions/${a}`),
    api(`${base}/versions/${b}`),
    api(`${base}/compare`, { query: { a, b } }),
  ]);
  const rows = [];
  for (const field of ["task", "runtime", "format", "status", "size_bytes", "description", "created_by"]) {
    rows.push(row(field, va[field], vb[field]));
  }
  const keys = (x, y) => [...new Set([...Object.keys(x ?? {}), ...Object.keys(y ?? {})])].sort();
  for (const k of keys(va.params, vb.params)) rows.push(row(`param ${k}`, va.params[k], vb.params[k]));
  for (const k of keys(va.metrics, vb.metrics)) rows.push(row(`metric ${k}`, va.metrics[k], vb.metrics[k]));
  for (const k of keys(va.tags, vb.tags)) rows.push(row(`tag ${k}`, va.tags[k], vb.tags[k]));
  rows.push(row("files", va.files.map((f) => f.path).join(", "), vb.files.map((f) => f.path).join(", ")));
  rows.push(row("lineage", va.lineage, vb.lineage));
  const files = diff.files;
  return [
    h(
      "table",
      { id: "comparison-table" },
      h("caption", {}, `v${a} and v${b} side by side (differences highlighted)`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), h("th", { scope: "col" }, `v${a}`), h("th", { scope: "col" }, `v${b}`))),
      h("tbody", {}, rows),
    ),
    h("p", {}, `Files: ${files.added.length} added, ${files.removed.length} removed, ${files.changed.length} changed, ${files.unchanged} unchanged.`),
  ];
}

async function aliases() {
  const model = await api(base);
  const writable = hasScope("models:write");
  const entries = Object.entries(model.aliases);
  return table(
    `Aliases of ${name}`,
    ["Alias", "Version", ""],
    entries.map(([alias, version]) => [
      alias,
      `v${version}`,
      writable
        ? h("button", { type: "button", class: "secondary", "aria-label": `Roll back ${alias}`, onclick: () => rollback(alias) }, "Roll back")
        : "",
    ]),
    "No aliases.",
  );
}

async function history() {
  const { data } = await api(`${base}/aliases/history`);
  return table(
    `Alias history of ${name}`,
    ["When", "Alias", "Action", "From", "To", "By", "Reason", "Gate"],
    data.map((e) => [when(e.created_at), e.alias, e.action, e.from_version ? `v${e.from_version}` : "", e.to_version ? `v${e.to_version}` : "", e.actor, e.reason, e.gate ? JSON.stringify(e.gate) : ""]),
    "No alias has moved yet.",
  );
}

async function refreshAliases() {
  await Promise.all([section("aliases", aliases), section("history", history), section("versions", listVersions)]);
}

async function rollback(alias) {
  try {
    const moved = await api(`${base}/aliases/${encodeURIComponent(alias)}/rollback`, { method: "POST", body: { reason: "rolled back in the console" } });
    say(`${alias} rolled back to v${moved.version}.`, "ok");
  } catch (error) {
    say(error.message, "error");
  }
  await refreshAliases();
}

document.getElementById("compare-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  await section("comparison", () => compare(form.get("a"), form.get("b")));
});

const aliasForm = document.getElementById("alias-form");
aliasForm.hidden = !hasScope("models:write");
aliasForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const alias = form.get("alias");
  try {
    await api(`${base}/aliases/${encodeURIComponent(alias)}`, {
      method: "PUT",
      body: { version: Number(form.get("version")), reason: form.get("reason") },
    });
    say(`${alias} now points at v${form.get("version")}.`, "ok");
  } catch (error) {
    say(error.message, "error");
  }
  await refreshAliases();
});

section("summary", summary);
refreshAliases();
