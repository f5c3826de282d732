// A lineage graph drawn as SVG: datasets and base models → jobs → versions → the jobs made
// from them. Lineage is a small directed acyclic graph (tens of nodes), so a layered layout is
// enough: each node's column is the length of the longest path that reaches it, rows follow
// the order nodes were added in, and each edge is a curve from the right of one node to the
// left of the next. Nodes are real links (SVG <a>): the keyboard reaches them, Enter opens
// the page of the dataset, job or version, and screen readers read their labels.
const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 190;
const NODE_H = 44;
const GAP_X = 70;
const GAP_Y = 18;
const PAD = 8;
const COLOURS = {
  dataset: "#e8f1e4",
  model: "#eef1f6",
  training: "#fff1d6",
  optimization: "#fbe3e3",
  evaluation: "#ece4f7",
  job: "#fff1d6",
  version: "#dde9fb",
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// A graph being built: nodes by id (first one wins), edges deduplicated.
export class Graph {
  constructor() {
    this.nodes = new Map();
    this.edges = new Map();
  }

  // kind: dataset | model | training | optimization | evaluation | job | version
  node(id, kind, label, href, detail = "") {
    if (!this.nodes.has(id)) this.nodes.set(id, { id, kind, label, href, detail });
    return id;
  }

  edge(from, to) {
    if (from !== to && this.nodes.has(from) && this.nodes.has(to)) this.edges.set(`${from}\u0000${to}`, { from, to });
  }
}

// Column per node: the longest path from a source (cycles cannot occur in lineage; a guard
// stops them looping all the same).
function columns(graph) {
  const incoming = new Map([...graph.nodes.keys()].map((id) => [id, []]));
  for (const { from, to } of graph.edges.values()) incoming.get(to).push(from);
  const column = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (column.has(id)) return column.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const value = Math.max(-1, ...incoming.get(id).map(depth)) + 1;
    visiting.delete(id);
    column.set(id, value);
    return value;
  };
  for (const id of graph.nodes.keys()) depth(id);
  // A source (a dataset, a base model) sits just before the first node it feeds, not in the
  // first column, so its edges stay short.
  const outgoing = new Map();
  for (const { from, to } of graph.edges.values()) outgoing.set(from, [...(outgoing.get(from) ?? []), to]);
  for (const id of graph.nodes.keys()) {
    const next = outgoing.get(id);
    if (incoming.get(id).length === 0 && next) column.set(id, Math.max(0, Math.min(...next.map((n) => column.get(n))) - 1));
  }
  return column;
}

function clip(text, max = 26) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// The SVG of `graph` (an empty-state paragraph's text when it has no node).
export function drawGraph(graph, caption) {
  const column = columns(graph);
  const rows = new Map();
  const position = new Map();
  for (const id of graph.nodes.keys()) {
    const c = column.get(id);
    const r = rows.get(c) ?? 0;
    rows.set(c, r + 1);
    position.set(id, { x: PAD + c * (NODE_W + GAP_X), y: PAD + r * (NODE_H + GAP_Y) });
  }
  const width = PAD * 2 + (Math.max(0, ...column.values()) + 1) * (NODE_W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(1, ...rows.values()) * (NODE_H + GAP_Y) - GAP_Y;
  const svg = el("svg", {
    id: "lineage-graph",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "group",
    "aria-label": caption,
    "data-nodes": graph.nodes.size,
    "data-edges": graph.edges.size,
  });
  svg.append(el("defs", {}, el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5a6472" }))));
  for (const { from, to } of graph.edges.values()) {
    const a = position.get(from);
    const b = position.get(to);
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const bend = Math.max(30, (x2 - x1) / 2);
    svg.append(el("path", {
      d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
      fill: "none",
      stroke: "#5a6472",
      "stroke-width": 1.4,
      "marker-end": "url(#arrow)",
      "data-from": from,
      "data-to": to,
    }));
  }
  for (const node of graph.nodes.values()) {
    const { x, y } = position.get(node.id);
    const label = `${node.kind}: ${node.label}${node.detail ? ` (${node.detail})` : ""}`;
    const shape = [
      el("title", {}, label),
      el("rect", { x, y, width: NODE_W, height: NODE_H, rx: 8, fill: COLOURS[node.kind] ?? "#f3f5f8", stroke: node.kind === "version" ? "#1f5fbf" : "#9aa3af", "stroke-width": node.kind === "version" ? 2 : 1 }),
      el("text", { x: x + 10, y: y + 17, "font-size": 11, fill: "#5a6472" }, clip(node.detail ? `${node.kind} · ${node.detail}` : node.kind, 30)),
      el("text", { x: x + 10, y: y + 34, "font-size": 13, "font-weight": 600, fill: "#1d2430" }, clip(node.label, 22)),
    ];
    const group = node.href
      ? el("a", { href: node.href, "aria-label": label, class: "lineage-node", "data-kind": node.kind, "data-id": node.id }, ...shape)
      : el("g", { "aria-label": label, class: "lineage-node", "data-kind": node.kind, "data-id": node.id }, ...shape);
    svg.append(group);
  }
  return svg;
}
