// Evaluations: score a version on a labelled file (optionally beside a second version); the
// evaluations; one report: metrics, per-class bars, the confusion matrix, calibration bins
// (a chart of accuracy against confidence) and the worst examples.
import { api, chart, fill, h, say, section, table, when } from "../console.js";
import { datasetOptions, pollEvery } from "../forms.js";

const POLL_MS = 1000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const form = document.getElementById("eval-form");
let stopWatching = null;
let watchedId = null;

function fixed(value, digits = 4) {
  return value === null || value === undefined ? "" : Number(value).toFixed(digits);
}

async function listEvaluations() {
  const { data } = await api("/v1/evaluations", { query: { limit: 20 } });
  return table(
    "Evaluations, newest first",
    ["Evaluation", "Status", "Version", "File", "Compared to", "Accuracy", "Macro F1"],
    data.map((e) => [
      h("button", { type: "button", class: "secondary", "aria-label": `Show evaluation ${e.id}`, onclick: () => watch(e.id) }, e.id),
      e.status,
      e.model_version,
      e.file,
      e.compare_to_version ?? "",
      fixed(e.metrics.accuracy),
      fixed(e.metrics.macro_f1),
    ]),
    "No evaluations yet.",
  );
}

function metricsTable(evaluation) {
  const report = evaluation.report;
  const compared = evaluation.compared;
  const names = Object.keys(report.metrics).sort();
  const columns = ["Metric", report.model];
  if (compared) columns.push(compared.model, "Difference");
  return h("div", {},
    h("p", {}, `${report.model} (${report.task}) on ${report.n_examples} examples of ${evaluation.file}.`),
    table(
      "Metrics",
      columns,
      names.map((name) => {
        const row = [name, fixed(report.metrics[name])];
        if (compared) row.push(fixed(compared.metrics[name]), fixed(evaluation.deltas[name]));
        return row;
      }),
    ));
}

function perClass(report) {
  const rows = report.per_class;
  chart("per-class-chart", {
    type: "bar",
    data: {
      labels: rows.map((c) => c.label),
      datasets: ["precision", "recall", "f1"].map((key) => ({ label: key, data: rows.map((c) => c[key]) })),
    },
    options: { scales: { y: { min: 0, max: 1 } } },
  });
  return table("Scores of each class", ["Class", "Precision", "Recall", "F1", "Support", "Predicted"], rows.map((c) => [c.label, fixed(c.precision), fixed(c.recall), fixed(c.f1), String(c.support), String(c.predicted)]), "No classes.");
}

// Rows are the true labels, columns the predicted ones; a cell's shade is its share of the row.
function confusion(report) {
  const matrix = report.confusion_matrix;
  if (!matrix) return h("p", { class: "empty" }, "No confusion matrix for this task.");
  const labels = report.labels;
  const cell = (count, rowTotal, diagonal) => {
    const share = rowTotal ? count / rowTotal : 0;
    const td = h("td", { class: "heat", "data-count": count }, String(count));
    td.style.backgroundColor = diagonal ? `rgba(27, 122, 58, ${share.toFixed(3)})` : `rgba(164, 38, 44, ${share.toFixed(3)})`;
    td.style.color = share > 0.55 ? "#fff" : "inherit";
    return td;
  };
  return h(
    "table",
    { id: "confusion-matrix" },
    h("caption", {}, "True label (rows) against predicted label (columns)"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "true \\ predicted"), labels.map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, matrix.map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0);
      return h("tr", {}, h("th", { scope: "row" }, labels[i]), row.map((count, j) => cell(count, total, i === j)));
    })),
  );
}

function calibration(report) {
  const cal = report.calibration;
  if (!cal) return h("p", { class: "empty" }, "No calibration for this task.");
  const bins = cal.bins.filter((b) => b.count > 0);
  chart("calibration-chart", {
    type: "bar",
    data: {
      labels: bins.map((b) => `${b.lower.toFixed(1)}–${b.upper.toFixed(1)}`),
      datasets: [
        { type: "bar", label: "accuracy", data: bins.map((b) => b.accuracy) },
        { type: "line", label: "confidence (perfect calibration)", data: bins.map((b) => b.confidence) },
      ],
    },
    options: { scales: { y: { min: 0, max: 1 } } },
  });
  return [
    h("p", {}, `Expected calibration error: ${fixed(cal.ece)}`),
    table("Calibration bins", ["Confidence from", "to", "Examples", "Mean confidence", "Accuracy"], bins.map((b) => [fixed(b.lower, 2), fixed(b.upper, 2), String(b.count), fixed(b.confidence), fixed(b.accuracy)]), "No bins."),
  ];
}

function worst(report) {
  return table(
    "Worst examples: the lowest probability of the true label",
    ["#", "Text", "True", "Predicted", "Score of the true label"],
    report.worst_examples.map((e) => [
      String(e.index),
      e.text,
      e.label ?? (e.expected_entities ?? []).map((m) => `${m.text} ${m.label}`).join(", "),
      e.predicted ?? (e.predicted_entities ?? []).map((m) => `${m.text} ${m.label}`).join(", "),
      fixed(e.score),
    ]),
    "No examples.",
  );
}

function describe(evaluation) {
  const parts = [h("p", {}, `${evaluation.id} · ${evaluation.model_version} on ${evaluation.file} · `, h("strong", { id: "evaluation-status" }, evaluation.status))];
  if (evaluation.progress) parts.push(h("p", { class: "hint" }, `${evaluation.progress.examples_scored} of ${evaluation.progress.total ?? "?"} examples scored`));
  if (evaluation.error) parts.push(h("p", { class: "error" }, `${evaluation.error.code ?? "error"}: ${evaluation.error.message ?? ""}`));
  return parts;
}

function watch(id) {
  if (stopWatching) stopWatching();
  watchedId = id;
  const url = new URL(window.location);
  url.searchParams.set("id", id);
  window.history.replaceState(null, "", url);
  document.getElementById("evaluation-section").hidden = false;
  for (const part of ["report", "per-class", "confusion", "calibration", "worst", "events"]) fill(part);
  fill("evaluation", h("p", {}, `Loading ${id}…`));
  stopWatching = pollEvery(POLL_MS, async () => {
    try {
      const path = `/v1/evaluations/${encodeURIComponent(id)}`;
      const evaluation = await api(path);
      if (watchedId !== id) return false;
      fill("evaluation", describe(evaluation));
      if (!FINISHED.has(evaluation.status)) return true;
      const { data } = await api(`${path}/events`, { query: { limit: 100 } });
      fill("events", table("Evaluation events", ["When", "Level", "Message"], data.map((e) => [when(e.created_at), e.level, e.message]), "No events."));
      const report = evaluation.report;
      if (report) {
        fill("report", metricsTable(evaluation));
        fill("per-class", perClass(report));
        fill("confusion", confusion(report));
        fill("calibration", calibration(report));
        fill("worst", worst(report));
      }
      await section("evaluations", listEvaluations);
      return false;
    } catch (error) {
      say(error.message, "error");
      return true;
    }
  });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const body = { model: data.get("model"), file: data.get("file") };
  if (data.get("compare_to")) body.compare_to = data.get("compare_to");
  try {
    const evaluation = await api("/v1/evaluations", { method: "POST", body });
    say(`Evaluation ${evaluation.id} created.`, "ok");
    await section("evaluations", listEvaluations);
    watch(evaluation.id);
  } catch (error) {
    say(error.message, "error");
  }
});

(async () => {
  const wanted = new URLSearchParams(window.location.search);
  try {
    const [datasets, models] = await Promise.all([api("/v1/datasets"), api("/v1/registry/models").catch(() => ({ data: [] }))]);
    fill("eval-file", datasetOptions(datasets.data, "choose a file"));
    fill("eval-models", models.data.map((m) => h("option", { value: m.name })));
    if (wanted.get("model")) document.getElementById("eval-model").value = wanted.get("model");
  } catch (error) {
    say(error.message, "error");
  }
  await section("evaluations", listEvaluations);
  if (wanted.get("id")) watch(wanted.get("id"));
})();
