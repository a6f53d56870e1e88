// A chat front end in miniature, as one built on LangGraph's JS SDK talks to the service: it creates a
// thread, streams a turn, lists the user's threads and reads the history, and shows each on the page.
import { Client } from "@langchain/langgraph-sdk";

const config = JSON.parse(document.getElementById("config").textContent);

function show(id, items) {
  const list = document.getElementById(id);
  for (const item of items) {
    const entry = document.createElement("li");
    entry.textContent = item;
    list.append(entry);
  }
}

async function chat() {
  const client = new Client({ apiUrl: config.apiUrl, apiKey: config.apiKey, defaultHeaders: config.headers });
  const thread = await client.threads.create({ metadata: { source: "browser" } });
  const tokens = [];
  let values = { messages: [] };
  const stream = client.runs.stream(thread.thread_id, "agent", {
    input: { messages: [{ role: "user", content: config.prompt }] },
    streamMode: ["values", "messages-tuple"],
  });
  for await (const part of stream) {
    if (part.event === "values") values = part.data;
    if (part.event === "messages") tokens.push(part.data[0].content);
  }
  show("messages", values.messages.map((m) => `${m.type}: ${m.content}`));
  document.getElementById("streamed").textContent = tokens.join("");
  const threads = await client.threads.search({ metadata: { graph_id: "agent" } });
  show("threads", threads.map((t) => t.thread_id));
  const history = await client.threads.getHistory(thread.thread_id, { limit: 100 });
  show("history", history.map((state) => `${state.values.messages?.length ?? 0} messages, next: ${state.next}`));
  document.getElementById("thread").textContent = thread.thread_id;
}

chat().then(
  () => document.body.setAttribute("data-done", "ok"),
  (error) => {
    document.getElementById("error").textContent = String(error);
    document.body.setAttribute("data-done", "error");
  },
);
