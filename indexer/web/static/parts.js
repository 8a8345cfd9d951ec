// The query's image parts as chips (an indexed image from "more like this", or an upload), each with a
// toggle between "like" (+1) and "not like" (-1) and a remove button; and the ways to add an upload:
// the file picker, a drop anywhere on the page, or a paste.

import { api, thumbnailUrl } from "./api.js";
import { $, el } from "./dom.js";

const previews = new Map(); // upload id -> object URL of the file picked in this tab

function chip(label, preview, weight, onToggle, onRemove) {
  return el(
    "li",
    { class: weight < 0 ? "chip negative" : "chip" },
    preview ? el("img", { src: preview, alt: "", width: 40, height: 40 }) : null,
    el("span", { class: "chip-label" }, label),
    el(
      "button",
      { type: "button", class: "chip-weight", title: "Toggle: like this / not like this", onclick: onToggle },
      weight < 0 ? "not like" : "like",
    ),
    el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${label}`, onclick: onRemove }, "×"),
  );
}

/** Shows `state`'s image parts; `change(images, uploads)` gets the new lists after a toggle or removal. */
export function renderParts(state, change) {
  const without = (list, at) => list.filter((_, index) => index !== at);
  const flipped = (list, at) => list.map((item, index) => (index === at ? { ...item, weight: -item.weight } : item));
  const images = state.images.map((image, at) =>
    chip(
      `image #${image.id}`,
      thumbnailUrl(image.id),
      image.weight,
      () => change(flipped(state.images, at), state.uploads),
      () => change(without(state.images, at), state.uploads),
    ),
  );
  const uploads = state.uploads.map((upload, at) =>
    chip(
      "uploaded image",
      previews.get(upload.id) || null,
      upload.weight,
      () => change(state.images, flipped(state.uploads, at)),
      () => change(state.images, without(state.uploads, at)),
    ),
  );
  $("parts").replaceChildren(...images, ...uploads);
}

/** Calls `added(uploadId)` for each image uploaded, `failed(error)` when one is refused. */
export function setupUploads(added, failed, busy) {
  async function send(file) {
    if (!file) return;
    busy(true);
    try {
      const reply = await api.upload(file);
      previews.set(reply.upload, URL.createObjectURL(file));
      added(reply.upload);
    } catch (error) {
      failed(error);
    } finally {
      busy(false);
    }
  }
  $("pick-button").addEventListener("click", () => $("pick").click());
  $("pick").addEventListener("change", (event) => {
    send(event.target.files[0]);
    event.target.value = "";
  });
  document.addEventListener("dragover", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    document.body.classList.add("dropping");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) document.body.classList.remove("dropping");
  });
  document.addEventListener("drop", (event) => {
    document.body.classList.remove("dropping");
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    send(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = Array.from(event.clipboardData ? event.clipboardData.files : []).find((item) =>
      item.type.startsWith("image/"),
    );
    if (!file) return;
    event.preventDefault();
    send(file);
  });
}
