// Forms built from a list of settings and their defaults (training recipes' hyperparameters,
// optimization methods' settings): one labelled field per setting, typed by its default, and
// back to the values the reader changed.
import { h } from "./console.js";

export function settingField(prefix, name, value) {
  const id = `${prefix}-${name}`;
  let input;
  if (typeof value === "boolean") {
    input = h("input", { id, name, type: "checkbox", checked: value, "data-kind": "boolean" });
  } else if (typeof value === "number") {
    input = h("input", { id, name, type: "number", step: "any", value, "data-kind": "number", size: 8 });
  } else if (typeof value === "string") {
    input = h("input", { id, name, value, "data-kind": "string" });
  } else {
    input = h("input", { id, name, value: JSON.stringify(value), "data-kind": "json" });
  }
  input.dataset.default = JSON.stringify(value);
  return h("div", {}, h("label", { for: id }, name), input);
}

// The settings whose value differs from the default (a JSON field that does not parse throws).
export function changedSettings(container) {
  const chosen = {};
  for (const input of container.querySelectorAll("input")) {
    let value;
    switch (input.dataset.kind) {
      case "boolean": value = input.checked; break;
      case "number": value = input.value === "" ? null : Number(input.value); break;
      case "json": value = JSON.parse(input.value); break;
      default: value = input.value;
    }
    if (JSON.stringify(value) !== input.dataset.default) chosen[input.name] = value;
  }
  return chosen;
}

// <option>s of the processed datasets, after a first "none" (or "choose") option.
export function datasetOptions(datasets, first = "none") {
  return [
    h("option", { value: "" }, first),
    ...datasets.filter((d) => d.status === "processed").map((d) => h("option", { value: d.id }, `${d.filename} (${d.rows ?? d.stats?.rows ?? "?"} rows, ${d.task}, ${d.id})`)),
  ];
}

export function pollEvery(ms, step) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    const again = await step();
    if (again && !stopped) timer = window.setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    if (timer) window.clearTimeout(timer);
  };
}
