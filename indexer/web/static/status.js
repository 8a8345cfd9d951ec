// The library's status in a corner (/api/status, cheap: it never loads the model), refreshed while the
// page is visible: images, model, and "indexing…" while the served generation is behind the store's.

import { api } from "./api.js";
import { $, el } from "./dom.js";

const POLL_MS = 10000;
let timer = null;

export function describe(status) {
  const images = `${Number(status.images).toLocaleString()} image${status.images === 1 ? "" : "s"}`;
  const failed = status.failed ? ` (${Number(status.failed).toLocaleString()} unreadable)` : "";
  const behind = status.generation < status.store_generation;
  return {
    text: `${images}${failed} · ${status.model}`,
    note: behind ? "indexing…" : status.ready === false ? "loading model…" : "",
    title: `library ${status.library}\nmodel ${status.model} (${status.dim}-d)\ngeneration ${status.generation}` +
      ` of ${status.store_generation}\nserver ${status.server ? status.server.version : "?"}`,
  };
}

async function refresh() {
  const corner = $("status");
  try {
    const shown = describe(await api.status());
    const note = shown.note ? [el("span", { class: "note" }, shown.note)] : [];
    corner.replaceChildren(el("span", {}, shown.text), ...note);
    corner.title = shown.title;
    corner.classList.remove("bad");
  } catch (error) {
    corner.replaceChildren(el("span", {}, error.message));
    corner.title = "";
    corner.classList.add("bad");
  }
}

function schedule() {
  clearTimeout(timer);
  if (document.visibilityState === "visible") timer = setTimeout(() => refresh().then(schedule), POLL_MS);
}

export function startStatus() {
  refresh().then(schedule);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refresh().then(schedule);
    else clearTimeout(timer);
  });
}
