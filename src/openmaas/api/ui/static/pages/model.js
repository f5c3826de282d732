// A model: its versions, lineage graph, a side-by-side comparison, aliases with history, set
// and roll back, traffic splits and evaluation gates (model-rollout.js). The API decides who
// may; the controls show for keys with models:write.
import { api, failure, fill, h, hasScope, megabytes, say, section, table, when } from "../console.js";
import { Graph, drawGraph } from "../lineage.js";
import { fillSplitForm, moveAlias, refreshRollout, splitForm } from "./model-rollout.js";

const { name } = JSON.parse(document.body.dataset.values || "{}");
const base = `/v1/registry/models/${encodeURIComponent(name)}`;
let versions = [];
let currentAliases = {};

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
  fillSplitForm(versions, currentAliases);
  section("lineage", () => lineageGraph(versions));
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

// The lineage graph: datasets and base models → jobs → versions of this model, the versions
// of other models optimized from them, and the evaluations of each. Jobs the key may not list
// (no training scope) leave only what the versions themselves record.
function parseRef(ref) {
  const bare = String(ref ?? "").split("@")[0];
  const at = bare.lastIndexOf(":");
  return at > 0 ? { model: bare.slice(0, at), version: Number(bare.slice(at + 1)) } : { model: bare, version: null };
}

function refNode(graph, ref) {
  const { model, version } = parseRef(ref);
  if (!model) return null;
  const href = `/ui/models/${encodeURIComponent(model)}`;
  return version
    ? graph.node(`version:${model}:${version}`, "version", `${model} v${version}`, href)
    : graph.node(`model:${model}`, "model", model, href);
}

function datasetNode(graph, id, detail = "") {
  return id ? graph.node(`dataset:${id}`, "dataset", id, `/ui/datasets?id=${encodeURIComponent(id)}`, detail) : null;
}

async function listed(path) {
  // Asked only with the training scope: a 403 would still be a console error.
  if (!hasScope("training")) return [];
  try {
    return (await api(path, { query: { limit: 100 } })).data;
  } catch {
    return []; // not for this key (no training scope): the graph shows what versions record
  }
}

async function lineageGraph(all) {
  const [optimizations, evaluations] = await Promise.all([listed("/v1/optimization/jobs"), listed("/v1/evaluations")]);
  const optimizationById = new Map(optimizations.map((job) => [job.id, job]));
  const graph = new Graph();
  const jobNode = (id, kind, detail) => graph.node(`job:${id}`, kind, id, kind === "optimization" ? `/ui/optimization?job=${encodeURIComponent(id)}` : `/ui/training?job=${encodeURIComponent(id)}`, detail);
  for (const v of all) {
    const l = v.lineage;
    const source = l.source ?? {};
    const self = graph.node(`version:${name}:${v.version}`, "version", `${name} v${v.version}`, `/ui/models/${encodeURIComponent(name)}`, v.runtime);
    let from = null;
    if (l.job_id) {
      const optimization = optimizationById.get(l.job_id);
      const kind = optimization || source.type === "optimization-job" || source.method ? "optimization" : "training";
      from = jobNode(l.job_id, kind, kind === "optimization" ? (optimization?.method ?? source.method ?? l.transform) : source.recipe ?? l.transform);
      const parent = optimization?.parent_version ?? source.parent ?? source.base_model;
      const parentNode = parent ? refNode(graph, parent) : null;
      if (parentNode) graph.edge(parentNode, from);
      const dataset = datasetNode(graph, l.dataset_id ?? source.training_file);
      if (dataset) graph.edge(dataset, from);
      graph.edge(from, self);
    } else {
      const dataset = datasetNode(graph, l.dataset_id);
      if (dataset) graph.edge(dataset, self);
    }
    if (l.parent_version) graph.edge(graph.node(`version:${name}:${l.parent_version}`, "version", `${name} v${l.parent_version}`, `/ui/models/${encodeURIComponent(name)}`), from ?? self);
    if (!l.job_id && source.type && source.type !== "path") {
      const origin = graph.node(`source:${name}:${v.version}`, "source", String(source.type), null, source.package ?? "");
      graph.edge(origin, self);
    }
  }
  // Versions of other models made from this one's, by optimization jobs: the version of
  // `model_name` whose lineage names the job.
  const children = optimizations.filter((job) => parseRef(job.parent_version).model === name && parseRef(job.parent_version).version);
  const registered = new Map();
  await Promise.all([...new Set(children.filter((job) => job.optimized_model && job.model_name !== name).map((job) => job.model_name))].map(async (model) => {
    const found = await listed(`/v1/registry/models/${encodeURIComponent(model)}/versions`);
    for (const v of found) if (v.lineage.job_id) registered.set(v.lineage.job_id, `${model}:${v.version}`);
  }));
  for (const job of children) {
    const jobId = jobNode(job.id, "optimization", `${job.method} · ${job.status}`);
    graph.edge(refNode(graph, job.parent_version), jobId);
    const made = registered.get(job.id) ?? job.optimized_model;
    if (made) graph.edge(jobId, refNode(graph, made));
  }
  // Evaluations of this model's versions, and the files they scored on.
  for (const evaluation of evaluations) {
    if (parseRef(evaluation.model_version).model !== name) continue;
    const id = graph.node(`job:${evaluation.id}`, "evaluation", evaluation.id, `/ui/evaluations?id=${encodeURIComponent(evaluation.id)}`, evaluation.status);
    graph.edge(refNode(graph, evaluation.model_version), id);
    if (evaluation.compare_to_version) graph.edge(refNode(graph, evaluation.compare_to_version), id);
    graph.edge(datasetNode(graph, evaluation.file), id);
  }
  if (graph.nodes.size === 0) return h("p", { class: "empty" }, "No lineage recorded.");
  return h("div", { class: "graph" }, drawGraph(graph, `Lineage of ${name}`));
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

function aliases(model) {
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
  let model;
  try {
    model = await api(base);
  } catch (error) {
    // Every part says why it is empty (a model the key cannot see, say).
    for (const id of ["aliases", "history", "versions", "lineage", "traffic", "gates"]) fill(id, failure(error));
    return;
  }
  currentAliases = model.aliases;
  await Promise.all([
    section("aliases", () => aliases(model)),
    section("history", history),
    section("versions", listVersions),
    refreshRollout(base, currentAliases, { base, refresh: refreshAliases }),
  ]);
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
  await moveAlias(base, form.get("alias"), Number(form.get("version")), form.get("reason"));
  await refreshAliases();
});

splitForm(base, { refresh: refreshAliases });
section("summary", summary);
refreshAliases();
