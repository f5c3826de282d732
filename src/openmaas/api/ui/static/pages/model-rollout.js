// The model page's rollout parts: each alias's traffic split with what its versions did
// (requests, errors, p50/p99, shadow agreement), a form to set one, promote or end it; each
// alias's evaluation gate and the latest verdicts seen here. All through the public API as the
// signed-in key (changes carry the CSRF token through api()); the API decides who may.
import { api, fill, h, hasScope, say, section, table, when } from "../console.js";

// Verdicts of the gates on moves made from this page (the API returns them on each move; a
// refusal is a 409 whose message holds both scores). Newest last, per alias.
const verdicts = new Map();

export function noteVerdict(alias, outcome, detail) {
  verdicts.set(alias, { outcome, detail, at: new Date().toISOString() });
}

export function gateOutcome(error) {
  return error?.body?.error?.code === "gate_failed";
}

function gateText(gate) {
  if (!gate) return "";
  if (gate.forced) return "forced past the gate";
  const { metric, current, candidate, examples } = gate;
  return `${metric} ${Number(candidate.score).toFixed(4)} (v${candidate.version}) against ${Number(current.score).toFixed(4)} (v${current.version}) on ${examples} examples`;
}

// Moving an alias from this page: the verdict of its gate (passed, forced or refused) is kept.
export async function moveAlias(base, alias, version, reason) {
  try {
    const moved = await api(`${base}/aliases/${encodeURIComponent(alias)}`, { method: "PUT", body: { version, reason } });
    if (moved.event?.gate) noteVerdict(alias, moved.event.gate.forced ? "forced" : "passed", gateText(moved.event.gate));
    say(`${alias} now points at v${version}.`, "ok");
    return true;
  } catch (error) {
    if (gateOutcome(error)) noteVerdict(alias, "refused", error.message);
    say(gateOutcome(error) ? `Gate refused: ${error.message}` : error.message, "error");
    return false;
  }
}

function ms(value) {
  return value === null || value === undefined ? "" : Number(value).toFixed(1);
}

function ratio(value) {
  return value === null || value === undefined ? "" : `${(value * 100).toFixed(1)}%`;
}

function splitView(split, { base, refresh }) {
  const writable = hasScope("models:write");
  const total = Object.values(split.versions).reduce((a, b) => a + b, 0) || 1;
  const numbers = [...new Set([...Object.keys(split.versions), ...Object.keys(split.stats), ...(split.shadow ? [String(split.shadow)] : [])])]
    .sort((a, b) => Number(a) - Number(b));
  const options = [];
  if (split.sticky) options.push(`sticky by header ${split.sticky}`);
  if (split.shadow) options.push(`shadow v${split.shadow} on ${Math.round(split.shadow_share * 100)}% of requests`);
  if (split.rollback) options.push(`automatic rollback ${JSON.stringify(split.rollback)}`);
  const rows = numbers.map((number) => {
    const stats = split.stats[number] ?? {};
    const weight = split.versions[number];
    const role = Number(number) === split.baseline ? "baseline" : weight === undefined ? "shadow" : "candidate";
    const isShadow = role === "shadow";
    return [
      `v${number}`,
      role,
      weight === undefined ? "" : String(weight),
      weight === undefined ? "" : `${Math.round((weight / total) * 100)}%`,
      String(isShadow ? stats.shadow_requests ?? 0 : stats.requests ?? 0),
      String(isShadow ? stats.shadow_errors ?? 0 : stats.errors ?? 0),
      isShadow ? "" : ratio(stats.error_rate ?? 0),
      ms(stats.p50_ms),
      ms(stats.p99_ms),
      stats.shadow_agreement === null || stats.shadow_agreement === undefined ? "" : Number(stats.shadow_agreement).toFixed(3),
    ];
  });
  const actions = writable
    ? h(
      "p",
      { class: "inline" },
      Object.keys(split.versions)
        .filter((number) => Number(number) !== split.baseline)
        .map((number) => h("button", {
          type: "button",
          "aria-label": `Promote v${number} on ${split.alias}`,
          onclick: async () => {
            await moveAlias(base, split.alias, Number(number), "promoted in the console");
            await refresh();
          },
        }, `Promote v${number}`)),
      h("button", {
        type: "button",
        class: "secondary",
        "aria-label": `End the split of ${split.alias}`,
        onclick: async () => {
          try {
            await api(`${base}/aliases/${encodeURIComponent(split.alias)}/traffic`, { method: "DELETE", query: { reason: "ended in the console" } });
            say(`The split of ${split.alias} ended; v${split.baseline} answers every request.`, "ok");
          } catch (error) {
            say(error.message, "error");
          }
          await refresh();
        },
      }, "End split"),
    )
    : null;
  return h(
    "div",
    { class: "split", "data-alias": split.alias },
    h("h3", {}, `${split.alias}: baseline v${split.baseline}`),
    h("p", { class: "hint" }, `${options.join(" · ") || "no options"} · since ${when(split.created_at)} by ${split.created_by}`),
    table(
      `Traffic split of ${split.alias}`,
      ["Version", "Role", "Weight", "Share", "Requests", "Errors", "Error rate", "p50 ms", "p99 ms", "Shadow agreement"],
      rows,
    ),
    actions,
  );
}

export async function splits(base, context) {
  const { data } = await api(`${base}/traffic`);
  if (data.length === 0) return h("p", { class: "empty" }, "No alias has a traffic split.");
  return data.map((split) => splitView(split, context));
}

export async function gates(base, aliases) {
  const names = Object.keys(aliases);
  const { data } = await api(`${base}/policies`);
  const byAlias = new Map(data.map((policy) => [policy.alias, policy]));
  const policies = names.map((alias) => byAlias.get(alias));
  return table(
    "Evaluation gates of the aliases",
    ["Alias", "Gate", "Latest verdict here"],
    names.map((alias, i) => {
      const policy = policies[i];
      const verdict = verdicts.get(alias);
      return [
        alias,
        policy ? `${policy.metric} on ${policy.eval_file} must reach the current version's + ${policy.min_delta} (set by ${policy.created_by})` : h("span", { class: "empty" }, "no gate"),
        verdict ? h("span", { class: verdict.outcome === "refused" ? "error" : "ok", "data-outcome": verdict.outcome }, `${verdict.outcome}: ${verdict.detail} (${when(verdict.at)})`) : "",
      ];
    }),
    "No aliases, so no gates.",
  );
}

// The split form: a weight per version (blank: not in the split), sticky header, shadow.
export function splitForm(base, { refresh }) {
  const form = document.getElementById("traffic-form");
  form.hidden = !hasScope("models:write");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const versions = {};
    for (const input of form.querySelectorAll("#traffic-weights input")) {
      if (input.value !== "") versions[input.dataset.version] = Number(input.value);
    }
    const body = { versions, reason: data.get("reason") || "" };
    if (data.get("sticky")) body.sticky = data.get("sticky");
    if (data.get("shadow")) {
      body.shadow = Number(data.get("shadow"));
      body.shadow_share = Number(data.get("shadow_share") || 1);
    }
    const rollback = {};
    if (data.get("max_error_rate_delta")) rollback.max_error_rate_delta = Number(data.get("max_error_rate_delta"));
    if (data.get("max_p99_ratio")) rollback.max_p99_ratio = Number(data.get("max_p99_ratio"));
    if (Object.keys(rollback).length) body.rollback = { ...rollback, min_requests: Number(data.get("min_requests") || 200) };
    const alias = data.get("alias");
    try {
      await api(`${base}/aliases/${encodeURIComponent(alias)}/traffic`, { method: "PUT", body });
      const shares = Object.entries(versions).map(([v, w]) => `v${v} ${w}`).join(", ");
      say(`${alias} split: ${shares}.`, "ok");
    } catch (error) {
      say(error.message, "error");
    }
    await refresh();
  });
}

export function fillSplitForm(versions, aliases) {
  fill("traffic-alias", Object.keys(aliases).map((alias) => h("option", { value: alias }, `${alias} (v${aliases[alias]})`)));
  fill("traffic-weights", versions.map((v) => h(
    "div",
    {},
    h("label", { for: `weight-${v.version}` }, `Weight of v${v.version}`),
    h("input", { id: `weight-${v.version}`, type: "number", min: 0, max: 1000000, step: 1, size: 6, "data-version": v.version }),
  )));
  fill("traffic-shadow", h("option", { value: "" }, "none"), versions.map((v) => h("option", { value: v.version }, `v${v.version}`)));
}

export function refreshRollout(base, aliases, context) {
  return Promise.all([section("traffic", () => splits(base, context)), section("gates", () => gates(base, aliases))]);
}
