// The page's state, its URL (so a search can be bookmarked, reloaded, shared, and the back button works),
// and the API request it makes. Words follow the CLI: plain words are one text part, a word `W:TEXT` is a
// part of its own with weight W (`2:beach`, `-1:people`, `0.5:"at night"`), `\2:beach` is the literal text.

export const PAGE_SIZE = 48;
export const DEFAULT_SORT = "relevance";
export const DEFAULT_THRESHOLD = "0.995";
const WEIGHTED = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(?=[^\s\d])([\s\S]*)$/;
const FILTERS = ["after", "before", "within", "camera"];

/** Splits like a shell: whitespace separates words, quotes (single or double) keep spaces in one word. */
export function words(text) {
  const found = [];
  let current = "";
  let quote = null;
  let started = false;
  for (const char of String(text)) {
    if (quote) {
      if (char === quote) quote = null;
      else current += char;
    } else if (char === '"' || char === "'") {
      quote = char;
      started = true;
    } else if (/\s/.test(char)) {
      if (started || current) found.push(current);
      current = "";
      started = false;
    } else {
      current += char;
    }
  }
  if (started || current) found.push(current);
  return found.filter((word) => word.trim());
}

/** The text parts of the search box and the "without" box (comma-separated, each of weight -1). */
export function textParts(text, without = "") {
  const plain = [];
  const weighted = [];
  for (const word of words(text)) {
    const match = word.startsWith("\\") ? null : WEIGHTED.exec(word);
    if (match) weighted.push({ text: match[2], weight: Number(match[1]) });
    else plain.push(word.startsWith("\\") ? word.slice(1) : word);
  }
  const parts = plain.length ? [{ text: plain.join(" "), weight: 1 }] : [];
  const negated = String(without)
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item) => ({ text: item, weight: -1 }));
  return [...parts, ...weighted, ...negated];
}

function signed(values, parse) {
  return values
    .filter(Boolean)
    .map((value) => (value.startsWith("-") ? { id: parse(value.slice(1)), weight: -1 } : { id: parse(value), weight: 1 }))
    .filter((item) => item.id !== "" && !Number.isNaN(item.id));
}

/** The state a URL's query string describes. */
export function stateFromUrl(search = window.location.search) {
  const params = new URLSearchParams(search);
  const state = {
    view: params.get("view") === "duplicates" ? "duplicates" : "search",
    q: params.get("q") || "",
    not: params.get("not") || "",
    images: signed(params.getAll("img"), (value) => Number.parseInt(value, 10)),
    uploads: signed(params.getAll("up"), (value) => value),
    sort: params.get("sort") || DEFAULT_SORT,
    weak: params.get("weak") === "1",
    threshold: params.get("threshold") || DEFAULT_THRESHOLD,
  };
  for (const name of FILTERS) state[name] = params.get(name) || "";
  return state;
}

/** The URL (path and query string) of a state; defaults are left out so URLs stay short. */
export function urlFromState(state) {
  const params = new URLSearchParams();
  if (state.view === "duplicates") {
    params.set("view", "duplicates");
    if (state.threshold && state.threshold !== DEFAULT_THRESHOLD) params.set("threshold", state.threshold);
    if (state.within) params.set("within", state.within);
  } else {
    if (state.q) params.set("q", state.q);
    if (state.not) params.set("not", state.not);
    for (const image of state.images) params.append("img", `${image.weight < 0 ? "-" : ""}${image.id}`);
    for (const upload of state.uploads) params.append("up", `${upload.weight < 0 ? "-" : ""}${upload.id}`);
    for (const name of FILTERS) if (state[name]) params.set(name, state[name]);
    if (state.sort && state.sort !== DEFAULT_SORT) params.set("sort", state.sort);
    if (state.weak) params.set("weak", "1");
  }
  const text = params.toString();
  return text ? `/?${text}` : "/";
}

export function hasQuery(state) {
  return Boolean(textParts(state.q, state.not).length || state.images.length || state.uploads.length);
}

export function hasImageParts(state) {
  return state.images.length > 0 || state.uploads.length > 0;
}

function filterOf(state) {
  const filter = {};
  if (state.after) filter.after = state.after;
  if (state.before) filter.before = state.before;
  if (state.camera) filter.camera = state.camera;
  if (state.within) filter.within = [state.within];
  return filter;
}

/** How to ask the API for a page of results: `{similar: id, params}` for "more like this" alone (GET
 * /api/images/ID/similar), else `{body}` for POST /api/search. */
export function requestFor(state, offset) {
  const text = textParts(state.q, state.not);
  if (!text.length && !state.uploads.length && state.images.length === 1 && state.images[0].weight > 0) {
    const params = { k: PAGE_SIZE, offset, sort: state.sort, ...filterOf(state) };
    return { similar: state.images[0].id, params };
  }
  const parts = [
    ...text,
    ...state.images.map((image) => ({ image_id: image.id, weight: image.weight })),
    ...state.uploads.map((upload) => ({ upload: upload.id, weight: upload.weight })),
  ];
  const body = { parts, k: PAGE_SIZE, offset, sort: state.sort, filter: filterOf(state) };
  // "Show weak matches" turns the relevance cutoff off; image parts have no relevance to cut by.
  if (state.weak && !hasImageParts(state)) body.min_relevance = 0;
  return { body };
}
