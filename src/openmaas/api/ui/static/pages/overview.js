// Overview: registered models, what is loaded, the last hour's traffic, jobs in flight.
import { api, chart, fill, h, hasScope, megabytes, section, table, when } from "../console.js";

const HOUR_MS = 3600 * 1000;

function modelLink(name) {
  return h("a", { href: `/ui/models/${encodeURIComponent(name)}` }, name);
}

async function registered() {
  const { data } = await api("/v1/registry/models");
  return table(
    "Registered models",
    ["Model", "Latest version", "Aliases", "Description", "Updated"],
    data.map((model) => [
      modelLink(model.name),
      model.latest_version ?? "",
      Object.entries(model.aliases).map(([alias, version]) => `${alias} → v${version}`).join(", "),
      model.description,
      when(model.updated_at),
    ]),
    "No models registered yet.",
  );
}

async function served() {
  const { data } = await api("/v1/models");
  return table(
    "Models this key can call",
    ["Address", "Task", "Version", "Runtime", "Loaded", "Memory", "Load time"],
    data.map((card) => [
      card.id,
      card.task,
      card.version,
      card.runtime,
      card.loaded ? "loaded" : "not loaded",
      megabytes(card.memory_bytes),
      card.load_seconds === null ? "" : `${card.load_seconds} s`,
    ]),
    "No model this key can call.",
  );
}

async function lastHour() {
  const start = new Date(Date.now() - HOUR_MS).toISOString();
  const report = await api("/v1/usage", { query: { start, group_by: "model" } });
  const rows = report.data.filter((group) => group.model);
  chart("hour-chart", {
    type: "bar",
    data: {
      labels: rows.map((group) => group.model),
      datasets: [
        { label: "requests", data: rows.map((group) => group.requests) },
        { label: "errors", data: rows.map((group) => group.errors) },
      ],
    },
  });
  return table(
    "Requests per model over the last hour",
    ["Model", "Requests", "Requests/s", "Errors", "Mean latency"],
    rows.map((group) => [
      group.model,
      group.requests,
      (group.requests / 3600).toFixed(3),
      group.errors,
      `${group.latency_ms_mean.toFixed(1)} ms`,
    ]),
    "No requests in the last hour.",
  );
}

async function jobs() {
  const { data } = await api("/v1/training/jobs", { query: { limit: 20 } });
  const live = data.filter((job) => ["queued", "running"].includes(job.status));
  return table(
    "Queued and running training jobs",
    ["Job", "Status", "Recipe", "Model", "Created"],
    live.map((job) => [job.id, job.status, job.recipe ?? "", job.model_name, when(job.created_at)]),
    "No training job is queued or running.",
  );
}

if (hasScope("models:read")) {
  section("models", registered);
} else {
  fill("models", h("p", { class: "empty" }, "The registry needs a key with the models:read scope."));
}
section("loaded", served);
section("hour", lastHour);
if (hasScope("training")) {
  section("jobs", jobs);
} else {
  fill("jobs", h("p", { class: "empty" }, "Jobs need a key with the training scope."));
}
