// Datasets: upload with a progress bar, the validation report with line numbers, statistics
// (label histogram, length distribution) and the split.
import { api, chart, fill, h, say, section, table, when } from "../console.js";

const PREVIEW_LINES = 20;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const form = document.getElementById("upload-form");
const progressBox = document.getElementById("upload-progress-box");
const progress = document.getElementById("upload-progress");
const percent = document.getElementById("upload-percent");

function open(id) {
  const url = new URL(window.location);
  url.searchParams.set("id", id);
  window.history.replaceState(null, "", url);
  show(id);
}

async function list() {
  const { data } = await api("/v1/datasets");
  return table(
    "Datasets",
    ["Dataset", "File", "Task", "Rows", "Errors", "Status", "Created"],
    data.map((d) => [
      h("button", { type: "button", class: "secondary", "aria-label": `Show ${d.filename} (${d.id})`, onclick: () => open(d.id) }, d.id),
      d.filename,
      d.task,
      d.rows,
      d.errors,
      d.status,
      `${when(d.created_at)} by ${d.created_by}`,
    ]),
    "No datasets yet.",
  );
}

function report(r) {
  const summary = h(
    "p",
    { class: r.ok ? "" : "error" },
    `${r.rows_read} rows read, ${r.rows_valid} valid; ${r.errors} errors, ${r.warnings} warnings${r.truncated ? ` (the first ${r.max_problems} listed)` : ""}.`,
  );
  return [
    summary,
    table(
      "Problems found, by line",
      ["Line", "Column", "Severity", "Problem", "How to fix"],
      r.problems.map((p) => [p.line ?? "file", p.column ?? "", p.severity, p.problem, p.hint]),
      "No problems.",
    ),
  ];
}

async function show(id) {
  document.getElementById("dataset-section").hidden = false;
  try {
    const d = await api(`/v1/datasets/${encodeURIComponent(id)}`);
    fill(
      "dataset",
      h("p", {}, `${d.filename} · ${d.format} · ${d.task} · ${d.bytes} bytes · ${d.status}${d.status_details ? `: ${d.status_details}` : ""}`),
      h("p", { class: "hint" }, `sha256 of the examples ${d.content_sha256}; ${d.stats.duplicates} duplicates, ${d.stats.conflicting_labels} conflicting labels.`),
    );
    fill("report", report(d.report));
    const content = await api(`/v1/files/${encodeURIComponent(id)}/content`, { raw: true });
    const head = (await content.text()).split("\n").slice(0, PREVIEW_LINES);
    document.getElementById("preview").textContent = head.map((line, i) => `${String(i + 1).padStart(4)}  ${line}`).join("\n");
    const labels = Object.entries(d.stats.labels);
    chart("label-chart", {
      type: "bar",
      data: { labels: labels.map(([l]) => l), datasets: [{ label: "examples", data: labels.map(([, n]) => n) }] },
    });
    const chars = d.stats.chars;
    if (chars) {
      const marks = ["min", "p50", "p90", "p95", "p99", "max"];
      chart("length-chart", {
        type: "bar",
        data: { labels: marks, datasets: [{ label: "characters", data: marks.map((m) => chars[m]) }] },
      });
    }
    if (!d.report.ok) {
      fill("split", h("p", { class: "empty" }, "No split: the dataset did not pass validation. Fix the lines above and upload it again."));
      return;
    }
    await section("split", async () => {
      const split = await api(`/v1/datasets/${encodeURIComponent(id)}/split`);
      return table(
        "The split",
        ["Part", "Rows", "Labels"],
        ["train", "validation", "test"].map((part) => [
          part,
          split[part].rows,
          Object.entries(split[part].labels).map(([l, n]) => `${l}: ${n}`).join(", "),
        ]),
      );
    });
  } catch (error) {
    fill("dataset", h("p", { class: "error" }, error.message));
  }
}

// XMLHttpRequest, not fetch: only it reports an upload's progress.
function upload(data) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/datasets");
    request.setRequestHeader("X-CSRF-Token", CSRF);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      progress.value = Math.round((100 * event.loaded) / event.total);
      percent.textContent = `${progress.value}%`;
    });
    request.addEventListener("load", () => {
      const body = JSON.parse(request.responseText || "null");
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new Error(body?.error?.message ?? `HTTP ${request.status}`));
    });
    request.addEventListener("error", () => reject(new Error("the upload failed")));
    request.send(data);
  });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  if (!data.get("format")) data.delete("format");
  progress.value = 0;
  percent.textContent = "";
  progressBox.hidden = false;
  try {
    const created = await upload(data);
    say(`Uploaded ${created.filename} as ${created.id}: ${created.report.errors} errors.`, created.report.ok ? "ok" : "error");
    form.reset();
    await section("datasets", list);
    open(created.id);
  } catch (error) {
    say(error.message, "error");
  }
});

section("datasets", list);
const wanted = new URLSearchParams(window.location.search).get("id");
if (wanted) show(wanted);
