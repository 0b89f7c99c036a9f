// Loads the current page's script (one module per page, all served by the hub).
const PAGES = new Set(["now", "models", "machines", "requests", "usage", "keys", "groups", "add-gpu", "admin"]);
const page = document.body.dataset.page;

for (const block of document.querySelectorAll("pre.copy")) {
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy-button";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => navigator.clipboard?.writeText(block.textContent.trim()));
  block.before(copy);
}

if (PAGES.has(page)) {
  import(`/static/page-${page}.js`).then((module) => module.start());
}
