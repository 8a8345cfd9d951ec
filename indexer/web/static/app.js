// The page's controller: state <-> URL and form, searches and their pages, messages. The other modules
// each draw one thing (grid, overlay, duplicates, parts, status); api.js talks to the server.

import { api } from "./api.js";
import { $, el, formatBytes } from "./dom.js";
import { renderDuplicates, totals } from "./duplicates.js";
import { card } from "./grid.js";
import { renderParts, setupUploads } from "./parts.js";
import {
  hasImageParts,
  hasQuery,
  requestFor,
  stateFromUrl,
  textParts,
  urlFromState,
} from "./query.js";
import { startStatus } from "./status.js";
import { closeViewer, isOpen, openViewer, setupViewer } from "./viewer.js";

const SCROLL_AHEAD_PX = 600; // the next page is fetched when the end of the grid comes this close
let state = stateFromUrl();
const results = []; // every hit shown, in order (the overlay steps through them)
let nextOffset = 0;
let more = false;
let loading = false;
let controller = null; // aborts the request in flight when a newer search starts

// --- messages ------------------------------------------------------------------------------------------

function message(text, { error = false, action = null } = {}) {
  const box = $("message");
  box.replaceChildren(el("span", {}, text), ...(action ? [action] : []));
  box.classList.toggle("error", error);
  box.hidden = !text;
}

function setLoading(value, what = "Searching…") {
  loading = value;
  document.body.classList.toggle("loading", value);
  $("grid").setAttribute("aria-busy", String(value));
  if (value) $("summary").textContent = what;
}

function noResults() {
  const cut = !state.weak && !hasImageParts(state);
  const show = cut
    ? el("button", { type: "button", class: "linkish", onclick: () => navigate({ ...state, weak: true }) },
        "Show weak matches")
    : null;
  message(cut ? "No matches. Weak matches are hidden: " : "No matches.", { action: show });
}

// --- the form and the URL ------------------------------------------------------------------------------

function fillForm() {
  $("q").value = state.q;
  $("not").value = state.not;
  for (const name of ["after", "before", "sort"]) $(name).value = state[name];
  for (const name of ["within", "camera"]) ensureOption($(name), state[name]);
  ensureOption($("duplicates-within"), state.within);
  $("weak").checked = state.weak;
  $("threshold").value = state.threshold;
  if (state.after || state.before || state.within || state.camera || state.weak || state.sort !== "relevance") {
    $("filters").open = true;
  }
  const duplicates = state.view === "duplicates";
  $("search-form").hidden = duplicates;
  $("duplicates-form").hidden = !duplicates;
  $("nav-search").toggleAttribute("aria-current", !duplicates);
  $("nav-duplicates").toggleAttribute("aria-current", duplicates);
  renderParts(state, (images, uploads) => navigate({ ...state, images, uploads }));
}

function ensureOption(select, value) {
  if (value && !Array.from(select.options).some((option) => option.value === value)) {
    select.append(el("option", { value }, value));
  }
  select.value = value;
}

function formState() {
  const read = (id) => $(id).value.trim();
  return {
    ...state,
    view: "search",
    q: read("q"),
    not: read("not"),
    after: read("after"),
    before: read("before"),
    within: $("within").value,
    camera: $("camera").value,
    sort: $("sort").value,
    weak: $("weak").checked,
  };
}

/** Goes to `next` as a new history entry (the back button returns), then shows it; `replace` takes the place
 * of the current entry instead (the overlay's own entry, when "more like this" leaves it). */
function navigate(next, { replace = false } = {}) {
  const url = urlFromState(next);
  if (replace) window.history.replaceState(null, "", url);
  else if (url !== here()) window.history.pushState(null, "", url);
  state = next;
  show();
}

function here() {
  return window.location.pathname + window.location.search;
}

const inOverlayEntry = () => Boolean(window.history.state && window.history.state.viewer);

/** Opens the overlay in a history entry of its own (same URL), so that going back closes it. */
function openOverlay(list, at) {
  if (!inOverlayEntry()) window.history.pushState({ viewer: true }, "", here());
  openViewer(list, at, similar);
}

function closeOverlay() {
  if (inOverlayEntry()) window.history.back(); // popstate closes it
  else closeViewer();
}

function onHistory() {
  if (isOpen()) closeViewer();
  if (urlFromState(state) === here()) return; // only the overlay's entry was left
  state = stateFromUrl();
  show();
}

async function loadFilterChoices() {
  try {
    const info = await api.info();
    const add = (select, values) => {
      for (const value of values || []) ensureOption(select, value);
    };
    add($("within"), info.roots);
    add($("duplicates-within"), info.roots);
    add($("camera"), info.cameras);
    $("within").value = state.within;
    $("duplicates-within").value = state.within;
    $("camera").value = state.camera;
  } catch (error) {
    message(`Filters unavailable: ${error.message}`, { error: true });
  }
}

// --- searching -----------------------------------------------------------------------------------------

function resetResults() {
  if (controller) controller.abort();
  controller = null;
  setLoading(false);
  results.length = 0;
  nextOffset = 0;
  more = false;
  $("grid").replaceChildren();
  $("duplicates").replaceChildren();
  $("summary").textContent = "";
  $("more").hidden = true;
  message("");
}

async function fetchPage(offset, signal) {
  const request = requestFor(state, offset);
  return request.similar !== undefined
    ? api.similar(request.similar, request.params, signal)
    : api.search(request.body, signal);
}

function describeQuery() {
  const weighted = (weight, text) => (weight === 1 ? text : weight === -1 ? `not ${text}` : `${weight}:${text}`);
  return [
    ...textParts(state.q, state.not).map((part) => weighted(part.weight, `“${part.text}”`)),
    ...state.images.map((image) => weighted(image.weight, `images like #${image.id}`)),
    ...state.uploads.map((upload) => weighted(upload.weight, "images like the upload")),
  ].join(" + ");
}

async function loadPage() {
  if (loading || (nextOffset > 0 && !more)) return;
  const mine = new AbortController();
  controller = mine;
  setLoading(true);
  try {
    const reply = await fetchPage(nextOffset, mine.signal);
    if (controller !== mine) return;
    const known = new Set(results.map((item) => item.id));
    const fresh = reply.results.filter((item) => !known.has(item.id));
    const start = results.length;
    results.push(...fresh);
    $("grid").append(...fresh.map((item, at) => card(item, () => openOverlay(results, start + at))));
    nextOffset = reply.offset + reply.k;
    more = Boolean(reply.more) && reply.results.length > 0;
    $("more").hidden = !more;
    $("summary").textContent = results.length
      ? `${results.length}${more ? "+" : ""} result${results.length === 1 ? "" : "s"} for ${describeQuery()}` +
        ` · ${Math.round(reply.took_ms)} ms`
      : "";
    if (!results.length) noResults();
  } catch (error) {
    if (error.name === "AbortError" || controller !== mine) return;
    more = false; // no retrying in a loop: the "More" button or a new search tries again
    $("more").hidden = !results.length;
    $("summary").textContent = "";
    message(error.message, { error: true });
  } finally {
    if (controller === mine) setLoading(false);
  }
  if (controller === mine && more && sentinelNear()) loadPage(); // a tall screen: the next page is in view too
}

function sentinelNear() {
  return $("sentinel").getBoundingClientRect().top < window.innerHeight + SCROLL_AHEAD_PX;
}

function similar(item) {
  const next = { ...state, view: "search", q: "", not: "", images: [{ id: item.id, weight: 1 }], uploads: [] };
  navigate(next, { replace: inOverlayEntry() });
  window.scrollTo({ top: 0 });
}

async function loadDuplicates() {
  const mine = new AbortController();
  controller = mine;
  setLoading(true, "Looking for duplicates… (the first time takes a while on a large library)");
  try {
    const reply = await api.duplicates({ threshold: state.threshold, within: state.within }, mine.signal);
    if (controller !== mine) return;
    const sum = totals(reply);
    $("summary").textContent =
      `${sum.groups} group${sum.groups === 1 ? "" : "s"}, ${sum.images} images · ` +
      `${formatBytes(sum.reclaimable)} reclaimable by keeping only each group's best copy`;
    renderDuplicates($("duplicates"), reply, (members, at) => openOverlay(members, at));
    if (!sum.groups) message("No near-duplicates at this similarity.");
  } catch (error) {
    if (error.name === "AbortError" || controller !== mine) return;
    $("summary").textContent = "";
    message(error.message, { error: true });
  } finally {
    if (controller === mine) setLoading(false);
  }
}

/** Shows the current state: the form, then its results. */
function show() {
  closeViewer();
  resetResults();
  fillForm();
  document.title = state.view === "duplicates" ? "Duplicates · clipsearch" : hasQuery(state)
    ? `${describeQuery()} · clipsearch` : "clipsearch";
  if (state.view === "duplicates") loadDuplicates();
  else if (hasQuery(state)) loadPage();
  else $("summary").textContent = "Type what you are looking for, or drop an image.";
}

// --- wiring --------------------------------------------------------------------------------------------

function setup() {
  const hint = $("drop-hint").textContent;
  setupViewer(closeOverlay);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(formState());
  });
  for (const id of ["after", "before", "within", "camera", "sort", "weak"]) {
    $(id).addEventListener("change", () => hasQuery(formState()) && navigate(formState()));
  }
  $("more").addEventListener("click", () => {
    more = true; // also a retry after a page failed
    loadPage();
  });
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest && event.target.closest("input, select, textarea");
    if (event.key === "/" && !typing && $("viewer").hidden && state.view === "search") {
      event.preventDefault();
      $("q").focus();
    }
  });
  $("duplicates-go").addEventListener("click", () => {
    const threshold = $("threshold").value.trim() || state.threshold;
    navigate({ ...state, view: "duplicates", threshold, within: $("duplicates-within").value });
  });
  for (const [id, view] of [["nav-search", "search"], ["nav-duplicates", "duplicates"], ["home", "search"]]) {
    $(id).addEventListener("click", (event) => {
      event.preventDefault();
      navigate(view === "search" && id === "home" ? stateFromUrl("") : { ...state, view });
    });
  }
  window.addEventListener("popstate", onHistory);
  setupUploads(
    (upload) => navigate({ ...formState(), uploads: [...state.uploads, { id: upload, weight: 1 }] }),
    (error) => message(`The image was not added: ${error.message}`, { error: true }),
    (busy) => {
      document.body.classList.toggle("uploading", busy);
      $("drop-hint").textContent = busy ? "Uploading…" : hint;
    },
  );
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && more && !loading && state.view === "search") loadPage();
  }, { rootMargin: `${SCROLL_AHEAD_PX}px` }).observe($("sentinel"));
}

setup();
startStatus();
loadFilterChoices();
show();
