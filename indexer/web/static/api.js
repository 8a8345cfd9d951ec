// The JSON API (indexer/web): one fetch wrapper that turns every failure into an ApiError with a message
// a person can read: the API's own {"error": {"type", "message"}}, or what went wrong on the way.

export class ApiError extends Error {
  constructor(message, { status = 0, type = "NetworkError" } = {}) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("The clipsearch server cannot be reached. Is `clipsearch serve` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : {};
    const message = error.message || `The server answered ${response.status} ${response.statusText}.`;
    throw new ApiError(message, { status: response.status, type: error.type || "HTTPError" });
  }
  if (body === null) throw new ApiError("The server's answer was not JSON.", { status: response.status });
  return body;
}

/** `params`: an object of strings, numbers or arrays (repeated), empty values left out. */
export function queryString(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== null && one !== undefined && one !== "") search.append(name, String(one));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const api = {
  status: () => request("/api/status"),
  info: () => request("/api/info"),
  details: (id) => request(`/api/images/${encodeURIComponent(id)}/details`),
  search: (body, signal) =>
    request("/api/search", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal,
    }),
  similar: (id, params, signal) =>
    request(`/api/images/${encodeURIComponent(id)}/similar${queryString(params)}`, { signal }),
  duplicates: (params, signal) => request(`/api/duplicates${queryString(params)}`, { signal }),
  upload: (file) => {
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    return request("/api/uploads", { method: "POST", body: form });
  },
};

export function thumbnailUrl(id) {
  return `/api/images/${encodeURIComponent(id)}/thumbnail`;
}

export function imageUrl(id) {
  return `/api/images/${encodeURIComponent(id)}`;
}
