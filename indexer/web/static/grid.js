// The grid of results: one card per hit, its thumbnail lazy-loaded with its size known up front (no layout
// shift), relevance (text queries) or score (queries with an image) and date under it.

import { thumbnailUrl } from "./api.js";
import { basename, el, resultDate } from "./dom.js";

const THUMB_BOX = 256; // the thumbnails' longest side, for width/height before they load

function thumbSize(item) {
  const width = Number(item.width) || THUMB_BOX;
  const height = Number(item.height) || THUMB_BOX;
  const scale = THUMB_BOX / Math.max(width, height);
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

export function matchLabel(item) {
  if (item.relevance !== null && item.relevance !== undefined) {
    return { text: `${Math.round(item.relevance * 100)}% match`, title: "relevance (calibrated for this query)" };
  }
  return { text: `similarity ${Number(item.score).toFixed(3)}`, title: "cosine similarity to the query" };
}

/** One result card; `onOpen(item)` when it is clicked. */
export function card(item, onOpen) {
  const name = basename(item.path);
  const size = thumbSize(item);
  const date = resultDate(item);
  const match = matchLabel(item);
  const image = el("img", {
    src: item.thumbnail || thumbnailUrl(item.id),
    alt: name,
    loading: "lazy",
    decoding: "async",
    width: size.width,
    height: size.height,
  });
  return el(
    "li",
    { class: "card", dataset: { id: String(item.id), path: item.path } },
    el("button", { type: "button", class: "thumb", title: item.path, onclick: () => onOpen(item) }, image),
    el(
      "div",
      { class: "caption" },
      el("span", { class: "name", title: item.path }, name),
      el(
        "span",
        { class: "meta" },
        el("span", { class: "score", title: match.title }, match.text),
        date.text ? el("time", { datetime: date.text, title: date.exif ? "date taken" : "file modified" }, date.text) : null,
      ),
    ),
  );
}
