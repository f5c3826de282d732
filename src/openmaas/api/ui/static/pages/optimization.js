// Optimization jobs: a form built from GET /v1/optimization/methods (each method's settings
// and defaults, the evaluation and training file pickers); the jobs; one job's events (polled
// while it runs), its deltas against the parent and the version it registered.
import { api, fill, h, say, section, table, when } from "../console.js";
import { changedSettings, datasetOptions, pollEvery, settingField } from "../forms.js";

const POLL_MS = 1000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const form = document.getElementById("opt-form");
const methodSelect = document.getElementById("opt-method");
const cancel = document.getElementById("cancel-job");
let methods = [];
let stopWatching = null;
let watchedId = null;

function showMethod() {
  const method = methods.find((m) => m.name === methodSelect.value);
  if (!method) return;
  document.getElementById("method-about").textContent = `${method.summary.replace(/\.?$/, ".")} Parents: ${method.runtimes.join(", ")} runtimes; ${method.tasks.join(", ")}.${method.needs_training_file ? " Needs a training file." : ""}`;
  fill("settings", Object.entries(method.settings).map(([name, value]) => settingField("set", name, value)));
}

function modelLink(reference) {
  const bare = String(reference).split("@")[0];
  const at = bare.lastIndexOf(":");
  const model = at > 0 ? bare.slice(0, at) : bare;
  return h("a", { href: `/ui/models/${encodeURIComponent(model)}` }, reference);
}

async function listJobs() {
  const { data } = await api("/v1/optimization/jobs", { query: { limit: 20 } });
  return table(
    "Optimization jobs, newest first",
    ["Job", "Status", "Method", "Parent", "Registered", "Created"],
    data.map((job) => [
      h("button", { type: "button", class: "secondary", "aria-label": `Show job ${job.id}`, onclick: () => watch(job.id) }, job.id),
      job.status,
      job.method,
      job.parent_version ? modelLink(job.parent_version) : job.model,
      job.optimized_model ? modelLink(job.optimized_model) : "",
      when(job.created_at),
    ]),
    "No optimization jobs yet.",
  );
}

function number(value, digits = 3) {
  if (value === null || value === undefined) return "";
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 0.001 || abs >= 1e6) ? value.toExponential(2) : value.toFixed(digits);
}

// Each figure measured for both (`x` beside `parent_x`): parent, this version, the change;
// then the figures that compare the two by themselves (agreement, speedups, ratios).
export function deltaRows(metrics) {
  const paired = [];
  const alone = [];
  for (const [name, value] of Object.entries(metrics).sort()) {
    if (name.startsWith("parent_")) continue;
    const parent = metrics[`parent_${name}`];
    if (parent !== undefined) {
      const change = value - parent;
      const ratio = parent ? `${(value / parent).toFixed(2)}×` : "";
      paired.push([name, number(parent), number(value), `${change >= 0 ? "+" : ""}${number(change)}`, ratio]);
    } else if (!(name.startsWith("eval_") && name.endsWith("_delta"))) {
      alone.push([name, "", number(value), "", ""]);
    }
  }
  return [...paired, ...alone];
}

// The version the job registered ("name:version"): the one whose lineage names the job.
async function registeredVersion(job) {
  if (!job.optimized_model) return null;
  try {
    const { data } = await api(`/v1/registry/models/${encodeURIComponent(job.model_name)}/versions`);
    const made = data.find((v) => v.lineage.job_id === job.id);
    return made ? `${job.model_name}:${made.version}` : job.optimized_model;
  } catch {
    return job.optimized_model;
  }
}

function describe(job, registered) {
  const parts = [
    h("p", {}, `${job.id} · ${job.method} of ${job.parent_version ?? job.model} · `, h("strong", { id: "job-status" }, job.status), job.cancel_requested ? " (cancel requested)" : ""),
    h("p", { class: "hint" }, `settings: ${JSON.stringify(job.settings)}${job.eval_file ? ` · evaluation file ${job.eval_file}` : ""}${job.training_file ? ` · training file ${job.training_file}` : ""}`),
  ];
  if (registered) parts.push(h("p", {}, "Registered: ", h("a", { id: "registered-version", href: `/ui/models/${encodeURIComponent(job.model_name)}` }, registered)));
  if (job.error) parts.push(h("p", { class: "error" }, `${job.error.code ?? "error"}: ${job.error.message ?? ""}`));
  return parts;
}

function watch(id) {
  if (stopWatching) stopWatching();
  watchedId = id;
  const url = new URL(window.location);
  url.searchParams.set("job", id);
  window.history.replaceState(null, "", url);
  document.getElementById("job-section").hidden = false;
  fill("job", h("p", {}, `Loading ${id}…`));
  fill("deltas");
  const events = [];
  let after;
  stopWatching = pollEvery(POLL_MS, async () => {
    try {
      const path = `/v1/optimization/jobs/${encodeURIComponent(id)}`;
      const job = await api(path);
      const page = await api(`${path}/events`, { query: { after, limit: 100 } });
      if (watchedId !== id) return false;
      for (const event of page.data) {
        after = Math.max(after ?? 0, event.id);
        events.push(event);
      }
      fill("job", describe(job, FINISHED.has(job.status) ? await registeredVersion(job) : null));
      fill("events", table("Job events", ["When", "Level", "Message"], events.map((e) => [when(e.created_at), e.level, e.message]), "No events yet."));
      const rows = deltaRows(job.metrics);
      fill("deltas", rows.length
        ? h("table", { id: "deltas-table" },
          h("caption", {}, "Measured in the job against the parent, on the same machine and texts"),
          h("thead", {}, h("tr", {}, ["Figure", "Parent", "This version", "Change", "Ratio"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) => (i === 0 ? h("th", { scope: "row" }, c) : h("td", {}, c)))))))
        : h("p", { class: "empty" }, FINISHED.has(job.status) ? "No figures were measured." : "Measured when the job finishes."));
      cancel.hidden = FINISHED.has(job.status);
      if (FINISHED.has(job.status)) {
        await section("jobs", listJobs);
        return false;
      }
    } catch (error) {
      say(error.message, "error");
    }
    return true;
  });
}

methodSelect.addEventListener("change", showMethod);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  let settings;
  try {
    settings = changedSettings(document.getElementById("settings"));
  } catch (error) {
    say(`A setting is not valid JSON: ${error.message}`, "error");
    return;
  }
  const body = { model: data.get("model"), method: data.get("method"), settings };
  for (const field of ["model_name", "alias", "eval_file", "training_file"]) {
    if (data.get(field)) body[field] = data.get(field);
  }
  try {
    const job = await api("/v1/optimization/jobs", { method: "POST", body });
    say(`Job ${job.id} created.`, "ok");
    await section("jobs", listJobs);
    watch(job.id);
  } catch (error) {
    say(error.message, "error");
  }
});

cancel.addEventListener("click", async () => {
  if (!watchedId) return;
  try {
    await api(`/v1/optimization/jobs/${encodeURIComponent(watchedId)}/cancel`, { method: "POST" });
    say(`Cancel requested for ${watchedId}.`, "ok");
  } catch (error) {
    say(error.message, "error");
  }
});

(async () => {
  const wanted = new URLSearchParams(window.location.search);
  try {
    const [methodList, datasets, models] = await Promise.all([
      api("/v1/optimization/methods"),
      api("/v1/datasets"),
      api("/v1/registry/models").catch(() => ({ data: [] })),
    ]);
    methods = methodList.data;
    fill("opt-method", methods.map((m) => h("option", { value: m.name }, m.name)));
    fill("opt-eval-file", datasetOptions(datasets.data));
    fill("opt-training-file", datasetOptions(datasets.data));
    fill("opt-models", models.data.map((m) => h("option", { value: m.name })));
    if (wanted.get("method")) methodSelect.value = wanted.get("method");
    if (wanted.get("model")) document.getElementById("opt-model").value = wanted.get("model");
    showMethod();
  } catch (error) {
    say(error.message, "error");
  }
  await section("jobs", listJobs);
  if (wanted.get("job")) watch(wanted.get("job"));
})();
