// Small DOM helpers. Everything from the API (paths are user data) goes in as text, never as markup.

/** An element: `el("a", {href: url, class: "x"}, "text", child)`. Strings become text nodes. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

/** The last part of a path, whichever separator it uses. */
export function basename(path) {
  const parts = String(path).split(/[\\/]/);
  return parts[parts.length - 1] || String(path);
}

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(bytes) {
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

/** A result's date: taken_at (EXIF, the camera's clock, shown as written) or else the file's mtime. */
export function resultDate(item) {
  if (item.taken_at) return { text: item.taken_at.slice(0, 10), exif: true };
  if (item.mtime_ns) {
    const date = new Date(Number(item.mtime_ns) / 1e6);
    return { text: date.toLocaleDateString("sv-SE"), exif: false }; // YYYY-MM-DD, local time
  }
  return { text: "", exif: false };
}

export function clear(node) {
  node.replaceChildren();
}
