// Opens the page in headless Chromium (the system's: never a downloaded one) and prints what it shows.
// CommonJS, so that require() finds playwright-core through NODE_PATH in the test's npm cache.
const { chromium } = require("playwright-core");

async function main(url, executablePath) {
  const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  try {
    const page = await browser.newPage();
    const consoleErrors = [];
    page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
    page.on("pageerror", (error) => consoleErrors.push(String(error)));
    await page.goto(url);
    await page.waitForSelector("body[data-done]", { timeout: 60_000 });
    const items = (id) => page.locator(`#${id} li`).allTextContents();
    return {
      done: await page.getAttribute("body", "data-done"),
      error: await page.textContent("#error"),
      thread: await page.textContent("#thread"),
      streamed: await page.textContent("#streamed"),
      messages: await items("messages"),
      threads: await items("threads"),
      history: await items("history"),
      console_errors: consoleErrors,
    };
  } finally {
    await browser.close();
  }
}

main(process.argv[2], process.argv[3]).then(
  (shown) => process.stdout.write(JSON.stringify(shown)),
  (error) => {
    process.stderr.write(String(error.stack || error));
    process.exit(1);
  },
);
