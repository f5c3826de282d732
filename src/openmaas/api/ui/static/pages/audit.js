// The audit log (admin): every change, who made it, before and after; filtered by the API.
import { api, h, section, table, when } from "../console.js";

const form = document.getElementById("audit-filter");
const more = document.getElementById("more");
let filters = {};
let afterId = null;

function change(event) {
  const parts = [];
  if (event.before) parts.push(h("div", {}, `before: ${JSON.stringify(event.before)}`));
  if (event.after) parts.push(h("div", {}, `after: ${JSON.stringify(event.after)}`));
  return parts;
}

async function page() {
  const listing = await api("/v1/audit", { query: { ...filters, after_id: afterId, limit: 50 } });
  more.hidden = listing.next_after_id === null;
  afterId = listing.next_after_id;
  return table(
    "Audit events",
    ["When", "Actor", "Project", "Action", "Target", "Change", "Request"],
    listing.data.map((event) => [
      when(event.created_at),
      event.actor,
      event.project,
      event.action,
      event.target,
      change(event),
      `${event.request_id} from ${event.client_address}`,
    ]),
    "No event matches.",
  );
}

function dayStart(value) {
  return value ? new Date(`${value}T00:00:00Z`).toISOString() : undefined;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  filters = {
    action: data.get("action"),
    actor: data.get("actor"),
    target: data.get("target"),
    project: data.get("project"),
    start: dayStart(data.get("start")),
    end: dayStart(data.get("end")),
  };
  afterId = null;
  await section("events", page);
});

more.addEventListener("click", () => section("events", page));
section("events", page);
