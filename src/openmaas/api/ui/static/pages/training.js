// Training jobs: a form built from the recipe's hyperparameters and defaults (and a base model,
// for recipes that fine-tune one); the jobs; one job's live curves (its events pushed by the
// server as server-sent events, or polled where a stream cannot be had), events, checkpoints,
// cancel, and the model it registered.
import { api, chart, fill, h, say, section, table, when } from "../console.js";
import { changedSettings, settingField } from "../forms.js";

const POLL_MS = 1000;
const SHOWN = new Set(["loss", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"]);
const NOT_PLOTTED = new Set(["step", "epoch", "total_steps", "estimated_finish"]);
const recipeSelect = document.getElementById("job-recipe");
const form = document.getElementById("job-form");
const cancel = document.getElementById("cancel-job");
const baseSelect = document.getElementById("job-base-model");
let recipes = [];
let models = [];
let watching = null; // { id, after, series, events, timer, source, job, drawn }

function showRecipe() {
  const recipe = recipes.find((r) => r.name === recipeSelect.value);
  if (!recipe) return;
  const base = recipe.needs_base_model ? " Needs a base model." : recipe.accepts_base_model ? " A base model is optional." : "";
  document.getElementById("recipe-about").textContent = `${recipe.description} Tasks: ${recipe.tasks.join(", ")}.${base}`;
  const takesBase = recipe.needs_base_model || recipe.accepts_base_model;
  document.getElementById("job-base-model-field").hidden = !takesBase;
  baseSelect.required = recipe.needs_base_model;
  baseSelect.disabled = !takesBase;
  const options = models.map((m) => h("option", { value: m.id }, `${m.id} (${m.task})`));
  fill("job-base-model", recipe.needs_base_model ? options : [h("option", { value: "" }, "none (from scratch)"), ...options]);
  fill("hyperparameters", Object.entries(recipe.defaults).map(([name, value]) => settingField("hp", name, value)));
}

function changedHyperparameters() {
  return changedSettings(document.getElementById("hyperparameters"));
}

async function listJobs() {
  const { data } = await api("/v1/training/jobs", { query: { limit: 20 } });
  return table(
    "Training jobs, newest first",
    ["Job", "Status", "Recipe", "Dataset", "Model", "Created"],
    data.map((job) => [
      h("button", { type: "button", class: "secondary", "aria-label": `Show job ${job.id}`, onclick: () => watch(job.id) }, job.id),
      job.status,
      job.recipe,
      job.training_file,
      job.fine_tuned_model ? h("a", { href: `/ui/models/${encodeURIComponent(job.model_name)}` }, job.fine_tuned_model) : job.model_name,
      when(job.created_at),
    ]),
    "No training jobs yet.",
  );
}

function describe(job) {
  const parts = [
    h("p", {}, `${job.id} · ${job.recipe} on ${job.training_file} · `, h("strong", { id: "job-status" }, job.status), job.cancel_requested ? " (cancel requested)" : ""),
    h("p", { class: "hint" }, `hyperparameters: ${JSON.stringify(job.hyperparameters)}`),
  ];
  if (Object.keys(job.metrics).length) parts.push(h("p", {}, `metrics: ${Object.entries(job.metrics).map(([k, v]) => `${k} ${Number(v).toFixed(4)}`).join(", ")}`));
  if (job.fine_tuned_model) parts.push(h("p", {}, "Registered: ", h("a", { href: `/ui/models/${encodeURIComponent(job.model_name)}`, id: "registered-model" }, job.fine_tuned_model)));
  if (job.error) parts.push(h("p", { class: "error" }, `${job.error.code ?? "error"}: ${job.error.message ?? ""}`));
  return parts;
}

function plot(series) {
  const steps = [...new Set(Object.values(series).flatMap((points) => points.map((p) => p.x)))].sort((a, b) => a - b);
  const count = series.loss?.length ?? 0;
  const curve = document.getElementById("curve");
  curve.dataset.points = String(count);
  document.getElementById("curve-points").textContent = `Loss curve: ${count} points`;
  const existing = window.Chart?.getChart?.(curve);
  if (existing) {
    // Keep what the reader switched on or off in the legend.
    const hidden = new Map(existing.data.datasets.map((d, i) => [d.label, !existing.isDatasetVisible(i)]));
    existing.data.labels = steps;
    existing.data.datasets = datasetsOf(series, steps).map((d) => ({ ...d, hidden: hidden.get(d.label) ?? d.hidden }));
    existing.update("none");
    return;
  }
  chart("curve", {
    type: "line",
    data: { labels: steps, datasets: datasetsOf(series, steps) },
    options: { spanGaps: true, scales: { x: { title: { display: true, text: "step" } } } },
  });
}

function datasetsOf(series, steps) {
  return Object.entries(series).map(([name, points]) => {
    const at = new Map(points.map((p) => [p.x, p.y]));
    // The rest are a click on the legend away.
    return { label: name, data: steps.map((s) => at.get(s) ?? null), hidden: !SHOWN.has(name) };
  });
}

// One event, in order: kept for the table, and its metrics added to the curves.
function take(state, event) {
  if (state.after !== undefined && event.id <= state.after) return;
  state.after = event.id;
  state.events.push(event);
  if (event.type === "metrics" && event.data) {
    for (const [name, value] of Object.entries(event.data)) {
      if (NOT_PLOTTED.has(name) || name === "learning_rate" || typeof value !== "number") continue;
      (state.series[name] ??= []).push({ x: event.data.step, y: value });
    }
  }
}

// Redraw at most once a frame however fast events arrive.
function draw(state) {
  if (state.drawn) return;
  state.drawn = true;
  window.requestAnimationFrame(() => {
    state.drawn = false;
    if (state !== watching) return;
    if (state.job) {
      fill("job", describe(state.job));
      cancel.hidden = !["queued", "running", "validating_files"].includes(state.job.status);
    }
    fill("events", table("Job events", ["When", "Level", "Message"], state.events.map((e) => [when(e.created_at), e.level, e.message]), "No events yet."));
    plot(state.series);
  });
}

async function finished(state) {
  draw(state);
  await section("checkpoints", checkpoints);
  await section("jobs", listJobs);
}

// The server pushes the job's events (api/job_event_stream.py); the browser reconnects a
// dropped stream by itself, from the last event id it saw.
function stream(state) {
  const source = new EventSource(`/v1/training/jobs/${encodeURIComponent(state.id)}/events/stream`);
  state.source = source;
  document.getElementById("curve").dataset.source = "stream";
  source.onmessage = (message) => {
    if (state !== watching) return;
    take(state, JSON.parse(message.data));
    draw(state);
  };
  source.addEventListener("job", (message) => {
    if (state !== watching) return;
    state.job = JSON.parse(message.data);
    draw(state);
    section("checkpoints", checkpoints);
  });
  source.addEventListener("end", (message) => {
    source.close();
    if (state !== watching) return;
    state.job = JSON.parse(message.data);
    finished(state);
  });
  source.onerror = () => {
    // Closed for good (refused, or no stream here): follow the job by polling instead.
    if (source.readyState !== EventSource.CLOSED || state !== watching) return;
    state.source = null;
    poll();
  };
}

async function poll() {
  const state = watching;
  if (!state) return;
  document.getElementById("curve").dataset.source = "polling";
  try {
    const job = await api(`/v1/training/jobs/${encodeURIComponent(state.id)}`);
    const page = await api(`/v1/training/jobs/${encodeURIComponent(state.id)}/events`, { query: { after: state.after, limit: 100 } });
    if (state !== watching) return;
    for (const event of page.data) take(state, event);
    state.job = job;
    draw(state);
    const done = ["succeeded", "failed", "cancelled"].includes(job.status);
    if (done) {
      await finished(state);
      return;
    }
    if (page.data.length === 0) await section("checkpoints", checkpoints);
  } catch (error) {
    say(error.message, "error");
  }
  state.timer = window.setTimeout(poll, POLL_MS);
}

async function checkpoints() {
  const { data } = await api(`/v1/training/jobs/${encodeURIComponent(watching.id)}/checkpoints`);
  return table("Checkpoints", ["Checkpoint", "Step", "Epoch", "Metrics"], data.map((c) => [c.id, c.step, c.epoch, JSON.stringify(c.metrics)]), "No checkpoints yet.");
}

function watch(id) {
  if (watching?.timer) window.clearTimeout(watching.timer);
  if (watching?.source) watching.source.close();
  watching = { id, after: undefined, series: {}, events: [], timer: null, source: null, job: null, drawn: false };
  const url = new URL(window.location);
  url.searchParams.set("job", id);
  window.history.replaceState(null, "", url);
  document.getElementById("job-section").hidden = false;
  const existing = window.Chart?.getChart?.(document.getElementById("curve"));
  if (existing) existing.destroy();
  fill("job", h("p", {}, `Loading ${id}…`));
  fill("checkpoints");
  if (window.EventSource) stream(watching);
  else poll();
}

recipeSelect.addEventListener("change", showRecipe);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  let hyperparameters;
  try {
    hyperparameters = changedHyperparameters();
  } catch (error) {
    say(`A hyperparameter is not valid JSON: ${error.message}`, "error");
    return;
  }
  const body = { recipe: data.get("recipe"), training_file: data.get("training_file"), hyperparameters };
  if (data.get("model_name")) body.model_name = data.get("model_name");
  if (!baseSelect.disabled && data.get("base_model")) body.base_model = data.get("base_model");
  try {
    const job = await api("/v1/training/jobs", { method: "POST", body });
    say(`Job ${job.id} created.`, "ok");
    await section("jobs", listJobs);
    watch(job.id);
  } catch (error) {
    say(error.message, "error");
  }
});

cancel.addEventListener("click", async () => {
  if (!watching) return;
  try {
    await api(`/v1/training/jobs/${encodeURIComponent(watching.id)}/cancel`, { method: "POST" });
    say(`Cancel requested for ${watching.id}.`, "ok");
  } catch (error) {
    say(error.message, "error");
  }
});

(async () => {
  try {
    const [recipeList, datasets, cards] = await Promise.all([api("/v1/training/recipes"), api("/v1/datasets"), api("/v1/models").catch(() => ({ data: [] }))]);
    recipes = recipeList.data;
    models = cards.data;
    fill("job-recipe", recipes.map((r) => h("option", { value: r.name }, r.name)));
    const usable = datasets.data.filter((d) => d.status === "processed");
    fill("job-dataset", usable.map((d) => h("option", { value: d.id }, `${d.filename} (${d.rows} rows, ${d.task})`)));
    const wantedRecipe = new URLSearchParams(window.location.search).get("recipe");
    if (wantedRecipe) recipeSelect.value = wantedRecipe;
    showRecipe();
  } catch (error) {
    say(error.message, "error");
  }
  await section("jobs", listJobs);
  const wanted = new URLSearchParams(window.location.search).get("job");
  if (wanted) watch(wanted);
})();
