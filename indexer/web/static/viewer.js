// The overlay: the full image with its details (/api/images/ID/details), Esc to close, the arrow keys for
// the previous and next result, and "more like this".

import { api, imageUrl } from "./api.js";
import { $, basename, clear, el, formatBytes } from "./dom.js";

let items = [];
let index = 0;
let onSimilar = () => {};
let requestClose = () => closeViewer(); // the page's way to close (through the history: see setupViewer)
let returnFocus = null;
let shown = 0; // which opening the details being fetched belong to

function camera(record) {
  return [record.camera_make, record.camera_model].filter(Boolean).join(" ");
}

function rows(record) {
  const modified = record.mtime_ns ? new Date(Number(record.mtime_ns) / 1e6).toLocaleString() : null;
  const size = record.width && record.height ? `${record.width} × ${record.height} px` : null;
  return [
    ["Path", record.path],
    ["Taken", record.taken_at ? record.taken_at.replace("T", " ") : "no EXIF date"],
    ["Camera", camera(record) || "unknown"],
    ["Dimensions", size],
    ["File size", record.size !== undefined && record.size !== null ? formatBytes(record.size) : null],
    ["Modified", modified],
    ["Format", record.format],
    ["Content hash", record.content_hash],
    ["Error", record.error],
  ];
}

function showDetails(record) {
  const list = $("viewer-details");
  clear(list);
  for (const [name, value] of rows(record)) {
    if (value === null || value === undefined || value === "") continue;
    list.append(el("dt", {}, name), el("dd", { class: name === "Path" ? "path" : null }, value));
  }
}

function render() {
  const item = items[index];
  const opening = ++shown;
  $("viewer-title").textContent = basename(item.path);
  const image = $("viewer-image");
  image.src = item.image || imageUrl(item.id);
  image.alt = basename(item.path);
  $("viewer-original").href = item.image || imageUrl(item.id);
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index === items.length - 1;
  showDetails(item);
  api.details(item.id).then(
    (record) => opening === shown && showDetails({ ...item, ...record }),
    (error) => {
      if (opening !== shown) return;
      $("viewer-details").append(el("dt", {}, "Details"), el("dd", { class: "error" }, error.message));
    },
  );
}

export function isOpen() {
  return !$("viewer").hidden;
}

/** Opens the overlay on `list[at]`; `similar(item)` runs "more like this". */
export function openViewer(list, at, similar) {
  items = list;
  index = at;
  onSimilar = similar;
  returnFocus = document.activeElement;
  $("viewer").hidden = false;
  document.body.classList.add("viewing");
  render();
  $("viewer-close").focus();
}

export function closeViewer() {
  if (!isOpen()) return;
  $("viewer").hidden = true;
  $("viewer-image").removeAttribute("src");
  document.body.classList.remove("viewing");
  if (returnFocus && document.contains(returnFocus)) returnFocus.focus();
}

function step(delta) {
  const next = index + delta;
  if (next < 0 || next >= items.length) return;
  index = next;
  render();
}

/** `close()` is how Esc, the close button and a click beside the image close the overlay (the page goes back
 * in its history, so that a phone's back button closes it too, and `closeViewer` runs on popstate). */
export function setupViewer(close) {
  requestClose = close;
  $("viewer-close").addEventListener("click", () => requestClose());
  $("viewer-prev").addEventListener("click", () => step(-1));
  $("viewer-next").addEventListener("click", () => step(1));
  $("viewer-similar").addEventListener("click", () => {
    onSimilar(items[index]);
  });
  $("viewer").addEventListener("click", (event) => {
    if (event.target.id === "viewer" || event.target.classList.contains("viewer-figure")) requestClose();
  });
  document.addEventListener("keydown", (event) => {
    if (!isOpen()) return;
    if (event.key === "Escape") requestClose();
    else if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.preventDefault();
  });
}
