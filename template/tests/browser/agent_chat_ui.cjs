// Uses LangChain's agent-chat-ui (built unmodified from npm) as a person would, in the system's headless
// Chromium: fills its setup form, asks, reloads, approves and edits a draft in its interrupt view. Prints
// what the page showed at each step as JSON; a step that never comes says what the page showed instead.
// CommonJS, so that require() finds playwright-core through NODE_PATH in the test's npm cache.
const { chromium } = require("playwright-core");

const STEP_TIMEOUT_MS = 30_000;
const CHAT_INPUT = "Type your message...";

// What agent-chat-ui shows of one moment: the conversation (its human bubbles and the assistant's rendered
// markdown, in order), whether it is idle (Send, not Cancel), the interrupt card, and its toasts.
function readPage() {
  const messages = [...document.querySelectorAll("div.group.ml-auto, div.group.mr-auto")].map((element) =>
    element.classList.contains("ml-auto")
      ? `human: ${element.querySelector("p")?.innerText.trim() ?? ""}`
      : `ai: ${element.querySelector(".py-1")?.innerText.trim() ?? ""}`,
  );
  const buttons = [...document.querySelectorAll("button")].map((button) => button.innerText.trim());
  const label = [...document.querySelectorAll("p")].find((p) => p.innerText.trim() === "Reply");
  return {
    url: location.href,
    messages,
    idle: buttons.includes("Send") && !buttons.includes("Cancel"),
    card: {
      title: document.querySelector("p.text-2xl")?.innerText.trim() ?? null,
      reply: label?.nextElementSibling?.value.trim() ?? null,
      buttons: buttons.filter((text) => ["Accept", "Submit", "Send Response", "Mark as Resolved"].includes(text)),
    },
    toasts: [...document.querySelectorAll("[data-sonner-toast]")].map((toast) => toast.innerText.trim()),
  };
}

async function until(page, what, done) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const shown = await page.evaluate(readPage);
    if (done(shown)) return shown;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${STEP_TIMEOUT_MS} ms; the page showed ${JSON.stringify(shown)}`);
    await page.waitForTimeout(100); // the poll's interval: each check reads the page anew
  }
}

const same = (shown, expected) => JSON.stringify(shown) === JSON.stringify(expected);
const threadOf = (url) => new URL(url).searchParams.get("threadId");
const settled = (expected) => (shown) => shown.idle && same(shown.messages, expected) && threadOf(shown.url) !== null;

// agent-chat-ui's own setup form: the deployment URL, the assistant and (on an api_key service) the key,
// which it keeps in localStorage and sends as X-Api-Key.
async function connect(page, config, assistantId) {
  await page.goto(`${config.origin}/`);
  await page.fill("#apiUrl", config.apiUrl);
  await page.fill("#assistantId", assistantId);
  await page.fill("#apiKey", config.apiKey ?? "");
  await page.getByRole("button", { name: "Continue" }).click();
  await page.getByPlaceholder(CHAT_INPUT).waitFor({ timeout: STEP_TIMEOUT_MS });
}

async function say(page, text) {
  await until(page, "idle chat box", (shown) => shown.idle);
  await page.getByPlaceholder(CHAT_INPUT).fill(text);
  await page.getByPlaceholder(CHAT_INPUT).press("Enter");
}

async function chat(page, config) {
  await connect(page, config, "agent");
  const rounds = [];
  for (let round = 1; round <= config.rounds; round++) {
    if (round > 1) await page.getByRole("button", { name: "New thread" }).click();
    const [first, second] = [`Round ${round}, first question`, `Round ${round}, second question`];
    const conversation = [`human: ${first}`, `ai: You said: ${first}`];
    await say(page, first);
    await until(page, `answer to "${first}"`, settled(conversation));
    conversation.push(`human: ${second}`, `ai: You said: ${second}`);
    await say(page, second);
    const answered = await until(page, `answer to "${second}"`, settled(conversation));
    await page.reload();
    const reloaded = await until(page, "conversation after the reload", settled(conversation));
    rounds.push({ thread: threadOf(reloaded.url), answered, reloaded });
  }
  return { rounds };
}

async function approval(page, config) {
  await connect(page, config, "approval");
  const [first, second, edited] = ["Please send a reply", "Send another one", "Edited in the browser"];
  const conversation = [`human: ${first}`, `ai: You said: ${first}`];
  await say(page, first);
  const asked = await until(page, "approval card", (shown) => settled(conversation)(shown) && shown.card.reply !== null);
  await page.getByRole("button", { name: "Accept", exact: true }).click();
  conversation.push(`ai: You said: ${first}`);
  const accepted = await until(page, "reply after Accept", settled(conversation));

  conversation.push(`human: ${second}`, `ai: You said: ${second}`);
  await say(page, second);
  const again = await until(page, "second approval card", (shown) => settled(conversation)(shown) && shown.card.reply !== null);
  await page.locator("xpath=//p[normalize-space()='Reply']/following-sibling::textarea").fill(edited);
  await page.getByRole("button", { name: "Submit", exact: true }).click();
  conversation.push(`ai: ${edited}`);
  const sent = await until(page, "edited reply after Submit", settled(conversation));
  await page.reload();
  const reloaded = await until(page, "conversation after the reload", settled(conversation));
  return { thread: threadOf(reloaded.url), asked, accepted, again, sent, reloaded };
}

async function main(config) {
  const browser = await chromium.launch({
    executablePath: config.chromium,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    // A desktop window: agent-chat-ui lays out its thread list and interrupt card for one.
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const consoleErrors = [];
    page.on("console", (message) => message.type() === "error" && consoleErrors.push(`${message.location().url}: ${message.text()}`));
    page.on("pageerror", (error) => consoleErrors.push(String(error)));
    const failedRequests = [];
    page.on("requestfailed", (request) => failedRequests.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
    page.on("response", (response) => {
      if (response.status() >= 400) failedRequests.push(`${response.request().method()} ${response.url()}: ${response.status()}`);
    });
    const shown = await { chat, approval }[config.scenario](page, config);
    return { ...shown, console_errors: consoleErrors, failed_requests: failedRequests };
  } finally {
    await browser.close();
  }
}

main(JSON.parse(process.argv[2])).then(
  (shown) => process.stdout.write(JSON.stringify(shown)),
  (error) => {
    process.stderr.write(String(error.stack || error));
    process.exit(1);
  },
);
