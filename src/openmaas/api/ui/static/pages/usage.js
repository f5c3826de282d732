// Usage of this key's project (an admin's: every project): by day, model and key; totals;
// the CSV export. The API decides what the key may see.
import { api, chart, fill, section, table } from "../console.js";

const form = document.getElementById("usage-filter");
const csv = document.getElementById("csv");
let period = {};

function dayStart(value) {
  return value ? new Date(`${value}T00:00:00Z`).toISOString() : undefined;
}

function query(extra) {
  const all = { ...period, ...extra };
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v));
}

function figures(group) {
  return [group.requests, group.errors, group.input_tokens, group.output_tokens, group.items, `${group.latency_ms_mean.toFixed(1)} ms`];
}

const FIGURES = ["Requests", "Errors", "Input tokens", "Output tokens", "Items", "Mean latency"];

async function byDay() {
  const report = await api("/v1/usage", { query: query({ group_by: "day,model" }) });
  fill("totals", table("Totals", FIGURES, [figures(report.total)]));
  const days = [...new Set(report.data.map((g) => g.day))].sort();
  const models = [...new Set(report.data.map((g) => g.model || "(no model)"))].sort();
  chart("day-chart", {
    type: "bar",
    data: {
      labels: days,
      datasets: models.map((model) => ({
        label: model,
        data: days.map((day) => report.data.filter((g) => g.day === day && (g.model || "(no model)") === model).reduce((n, g) => n + g.requests, 0)),
      })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
  return table("Usage by day and model", ["Day", "Model", ...FIGURES], report.data.map((g) => [g.day, g.model || "(no model)", ...figures(g)]), "No usage in this period.");
}

function keyName(group) {
  return group.key_prefix ? `om-${group.key_prefix}` : `key ${group.key_id}`;
}

async function byKey() {
  const report = await api("/v1/usage", { query: query({ group_by: "key" }) });
  chart("key-chart", {
    type: "bar",
    data: {
      labels: report.data.map(keyName),
      datasets: [{ label: "tokens", data: report.data.map((g) => g.input_tokens + g.output_tokens) }, { label: "requests", data: report.data.map((g) => g.requests) }],
    },
    options: { indexAxis: "y" },
  });
  return table("Usage by key", ["Key", ...FIGURES], report.data.map((g) => [keyName(g), ...figures(g)]), "No usage in this period.");
}

function load() {
  const params = new URLSearchParams(query({ format: "csv" }));
  csv.href = `/v1/usage?${params}`;
  return Promise.all([section("by-day", byDay), section("by-key", byKey)]);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData(form);
  period = { start: dayStart(data.get("start")), end: dayStart(data.get("end")), model: data.get("model") };
  load();
});


load();
