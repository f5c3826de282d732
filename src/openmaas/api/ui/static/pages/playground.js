// The playground: call a model of each task through the public API, as the signed-in key,
// and show the result as a picture (similarity matrix, score bars, highlighted entities,
// streamed chat) with the same request as curl and as Python with the openai client. Speech
// is uploaded from a file or recorded from the microphone (MediaRecorder) and sent to the same
// /v1/audio/transcriptions route.
import { ApiError, api, chart, fill, h, say } from "../console.js";

const form = document.getElementById("playground-form");
const select = document.getElementById("pg-model");
const origin = window.location.origin;
const modeSelect = document.getElementById("pg-mode");
let cards = [];
let recorded = null; // the last recording (a Blob), sent when no file is chosen

// What each task sends: the route, the body, and how the openai client says it.
const TASKS = {
  embedding: {
    path: "/v1/embeddings",
    body: (model, texts) => ({ model, input: texts }),
    python: (body) => `response = client.embeddings.create(model=${py(body.model)}, input=${py(body.input)})\nfor item in response.data:\n    print(item.index, [round(x, 4) for x in item.embedding[:4]])`,
    show: similarity,
  },
  "text-classification": {
    path: "/v1/classify",
    body: (model, texts) => ({ model, input: texts }),
    show: scores,
  },
  "token-classification": {
    path: "/v1/ner",
    body: (model, texts) => ({ model, input: texts }),
    show: entities,
  },
  rerank: {
    path: "/v1/rerank",
    body: (model, texts, query) => ({ model, query, documents: texts }),
    show: ranking,
  },
  translation: { path: "/v1/translate", body: (model, texts) => ({ model, input: texts }), show: texts },
  summarization: { path: "/v1/summarize", body: (model, texts) => ({ model, input: texts.join("\n") }), show: texts },
  "text-generation": {
    path: "/v1/chat/completions",
    body: (model, texts) => ({ model, stream: true, max_tokens: 128, messages: [{ role: "user", content: texts.join("\n") }] }),
    python: (body) =>
      `stream = client.chat.completions.create(\n    model=${py(body.model)}, messages=${py(body.messages)}, max_tokens=${body.max_tokens}, stream=True\n)\nfor chunk in stream:\n    print(chunk.choices[0].delta.content or "", end="")`,
    run: chat,
  },
  "speech-recognition": {
    path: "/v1/audio/transcriptions",
    audio: true,
    python: (body) => `with open("clip.wav", "rb") as audio:\n    print(client.audio.transcriptions.create(model=${py(body.model)}, file=audio).text)`,
    run: transcribe,
  },
};

// A Python literal of a JSON value (a JSON string is a valid Python string literal).
function py(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(py).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function snippets(task, body) {
  const spec = TASKS[task];
  const curl = spec.audio
    ? `curl -sS ${origin}${spec.path} \\\n  -H "Authorization: Bearer $OPENMAAS_API_KEY" \\\n  -F model=${shellQuote(body.model)} -F file=@clip.wav`
    : `curl -sS ${origin}${spec.path} \\\n  -H "Authorization: Bearer $OPENMAAS_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d ${shellQuote(JSON.stringify(body))}`;
  const call = spec.python
    ? spec.python(body)
    : `# a route of OpenMaaS's own: the client's generic post\nprint(client.post(${py(spec.path.replace("/v1", ""))}, body=${py(body)}, cast_to=object))`;
  const python = `import os\n\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key=os.environ["OPENMAAS_API_KEY"])\n${call}`;
  document.getElementById("snippet-curl").textContent = curl;
  document.getElementById("snippet-python").textContent = python;
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na * nb) || 1);
}

function similarity(answer, inputs) {
  const vectors = answer.data.map((item) => item.embedding);
  const cell = (value) => {
    const td = h("td", { class: "heat" }, value.toFixed(3));
    td.style.backgroundColor = `rgba(31, 95, 191, ${Math.max(0, value).toFixed(3)})`;
    td.style.color = value > 0.55 ? "#fff" : "inherit";
    return td;
  };
  const label = (text, i) => `${i + 1}. ${text.length > 40 ? `${text.slice(0, 40)}…` : text}`;
  return h(
    "table",
    { id: "similarity" },
    h("caption", {}, `Cosine similarity of ${vectors.length} texts (${vectors[0]?.length ?? 0} dimensions)`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), inputs.map((_, i) => h("th", { scope: "col" }, String(i + 1))))),
    h("tbody", {}, vectors.map((a, i) => h("tr", {}, h("th", { scope: "row" }, label(inputs[i], i)), vectors.map((b) => cell(cosine(a, b)))))),
  );
}

function scores(answer, inputs) {
  const first = answer.data[0];
  document.getElementById("pg-chart-box").hidden = false;
  chart("pg-chart", {
    type: "bar",
    data: { labels: first.labels.map((l) => l.label), datasets: [{ label: `scores: ${inputs[0]}`, data: first.labels.map((l) => l.score) }] },
    options: { indexAxis: "y", scales: { x: { min: 0, max: 1 } } },
  });
  return h(
    "table",
    { id: "scores" },
    h("caption", {}, "Top label and scores per text"),
    h("thead", {}, h("tr", {}, ["Text", "Label", "Scores"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, answer.data.map((item) => h("tr", {}, h("td", {}, inputs[item.index]), h("td", {}, item.label), h("td", {}, item.labels.map((l) => `${l.label} ${l.score.toFixed(3)}`).join(", "))))),
  );
}

function entities(answer, inputs) {
  return answer.data.map((item) => {
    const text = inputs[item.index];
    const parts = [];
    let at = 0;
    for (const entity of [...item.entities].sort((a, b) => a.start - b.start)) {
      if (entity.start < at) continue;
      parts.push(text.slice(at, entity.start));
      parts.push(h("mark", { title: entity.label, "data-label": entity.label }, text.slice(entity.start, entity.end), h("span", { class: "entity-label" }, entity.label)));
      at = entity.end;
    }
    parts.push(text.slice(at));
    return h("p", { class: "entities" }, parts);
  });
}

function ranking(answer, inputs) {
  return h(
    "ol",
    { id: "ranking" },
    answer.results.map((r) => h("li", {}, `${r.relevance_score.toFixed(3)} · ${inputs[r.index]}`)),
  );
}

function texts(answer) {
  return answer.data.map((item) => h("p", { class: "output" }, item.text));
}

async function chat(body) {
  const output = h("p", { class: "output", id: "chat-output" });
  fill("result", output);
  const response = await api(TASKS["text-generation"].path, { method: "POST", body, raw: true });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: /, "").trim();
      if (!data || data === "[DONE]") continue;
      const delta = JSON.parse(data).choices?.[0]?.delta?.content;
      if (delta) {
        output.textContent += delta;
        output.dataset.chunks = String(Number(output.dataset.chunks ?? 0) + 1);
      }
    }
  }
}

async function transcribe(body) {
  const file = document.getElementById("pg-audio").files[0];
  if (!file && !recorded) throw new Error("choose an audio file or record one first");
  const upload = new FormData();
  upload.set("model", body.model);
  if (file) upload.set("file", file);
  else upload.set("file", recorded, `recording.${recorded.type.includes("ogg") ? "ogg" : "webm"}`);
  const answer = await api(TASKS["speech-recognition"].path, { method: "POST", body: upload });
  fill("result", h("p", { class: "output", id: "transcript" }, answer.text));
}

// Record from the microphone until Stop, then transcribe what was recorded.
let recorder = null;
const recordButton = document.getElementById("record");
const stopButton = document.getElementById("record-stop");

async function startRecording() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    say(`The microphone is not available: ${error.message}`, "error");
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    for (const track of stream.getTracks()) track.stop();
    recorded = new Blob(chunks, { type: recorder.mimeType });
    recorder = null;
    document.getElementById("pg-audio").value = "";
    document.getElementById("recording").textContent = `Recorded ${Math.round(recorded.size / 1024)} KiB.`;
    form.requestSubmit();
  });
  recorder.start();
  recordButton.hidden = true;
  stopButton.hidden = false;
  stopButton.focus();
  document.getElementById("recording").textContent = "Recording…";
}

recordButton.addEventListener("click", startRecording);
// Browsers without recording (or a page not served over HTTPS or from localhost) upload only.
if (!window.MediaRecorder || !navigator.mediaDevices?.getUserMedia) recordButton.hidden = true;
stopButton.addEventListener("click", () => {
  stopButton.hidden = true;
  recordButton.hidden = false;
  recorder?.stop();
});
document.getElementById("pg-audio").addEventListener("change", () => {
  recorded = null;
  document.getElementById("recording").textContent = "";
});

// An embedding model also ranks texts against a query (/v1/rerank): the reader picks which.
function currentTask() {
  const task = cards.find((card) => card.id === select.value)?.task;
  return task === "embedding" && modeSelect.value === "rerank" ? "rerank" : task;
}

function adapt() {
  const task = currentTask();
  const spec = TASKS[task];
  const card = cards.find((c) => c.id === select.value);
  document.getElementById("pg-mode-field").hidden = card?.task !== "embedding";
  document.getElementById("pg-task").textContent = task ? `Task: ${task}${spec ? "" : " (no playground for this task yet)"}` : "";
  document.getElementById("pg-query-field").hidden = task !== "rerank";
  document.getElementById("pg-audio-field").hidden = task !== "speech-recognition";
  document.getElementById("pg-texts-field").hidden = task === "speech-recognition";
  document.getElementById("pg-chart-box").hidden = true;
  if (spec) snippets(task, spec.audio ? { model: select.value } : spec.body(select.value, lines(), document.getElementById("pg-query").value));
}

function lines() {
  return document.getElementById("pg-texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const task = currentTask();
  const spec = TASKS[task];
  if (!spec) return;
  const inputs = lines();
  const body = spec.audio ? { model: select.value } : spec.body(select.value, inputs, document.getElementById("pg-query").value);
  snippets(task, body);
  say("Running…");
  try {
    if (spec.run) {
      await spec.run(body);
    } else {
      const answer = await api(spec.path, { method: "POST", body });
      fill("result", spec.show(answer, inputs));
    }
    say("Done.", "ok");
  } catch (error) {
    say(error.message, "error");
  }
});

select.addEventListener("change", adapt);
modeSelect.addEventListener("change", adapt);
document.getElementById("pg-query").addEventListener("input", adapt);
document.getElementById("pg-texts").addEventListener("input", adapt);

(async () => {
  try {
    cards = (await api("/v1/models")).data;
  } catch (error) {
    say(error.message, "error");
    return;
  }
  const wanted = new URLSearchParams(window.location.search).get("model");
  fill("pg-model", cards.map((card) => h("option", { value: card.id, selected: card.id === wanted }, `${card.id} (${card.task})`)));
  fill("result", h("p", { class: "empty" }, cards.length ? "Run a model to see its answer." : "No model this key can call."));
  adapt();
})();
