// The duplicates view (/api/duplicates): each group with its best copy marked, the others' similarity to
// it, and the bytes that removing all but the best copy would free. Nothing is ever deleted from here.

import { thumbnailUrl } from "./api.js";
import { basename, el, formatBytes } from "./dom.js";

function member(item, onOpen) {
  return el(
    "li",
    { class: item.best ? "member best" : "member", dataset: { id: String(item.id), path: item.path } },
    el(
      "button",
      { type: "button", class: "thumb", title: item.path, onclick: () => onOpen(item) },
      el("img", { src: thumbnailUrl(item.id), alt: basename(item.path), loading: "lazy", width: 128, height: 128 }),
    ),
    el(
      "div",
      { class: "caption" },
      item.best ? el("span", { class: "badge" }, "best copy") : null,
      el("span", { class: "name", title: item.path }, basename(item.path)),
      el(
        "span",
        { class: "meta" },
        item.best ? null : el("span", { title: "cosine similarity to the best copy" }, Number(item.score).toFixed(3)),
        el("span", {}, formatBytes(item.size)),
        item.width && item.height ? el("span", {}, `${item.width}×${item.height}`) : null,
      ),
    ),
  );
}

/** Totals from the reply's summary, or counted from its groups when the summary lacks them. */
export function totals(reply) {
  const groups = reply.groups || [];
  const summary = reply.summary || {};
  return {
    groups: summary.groups ?? groups.length,
    images: summary.images ?? groups.reduce((sum, group) => sum + group.members.length, 0),
    reclaimable: summary.reclaimable_bytes ?? groups.reduce((sum, group) => sum + group.reclaimable_bytes, 0),
  };
}

/** The groups as DOM nodes; `onOpen(members, at)` when a member is clicked. */
export function renderDuplicates(container, reply, onOpen) {
  container.replaceChildren(
    ...(reply.groups || []).map((group, number) => {
      const members = group.members.map((item) => ({ ...item, image: null }));
      return el(
        "section",
        { class: "group", "aria-label": `Group ${number + 1}` },
        el(
          "h3",
          {},
          `${group.images} copies · ${formatBytes(group.reclaimable_bytes)} reclaimable`,
        ),
        el("ol", { class: "members" }, ...members.map((item, at) => member(item, () => onOpen(members, at)))),
      );
    }),
  );
}
