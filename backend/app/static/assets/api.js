// The admin API, as the page calls it: the token as a Bearer header only, never in a URL, and
// only the documented query parameters. Every failure becomes an ApiError with the API's message.

const BASE = "/admin/migrations/goals";

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body || {};
    this.activeJobId = typeof this.body.active_job_id === "string" ? this.body.active_job_id : null;
  }

  get authFailure() {
    return this.status === 401 || this.status === 403;
  }
}

function describe(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => `${(e.loc || []).filter((p) => p !== "query").join(".")}: ${e.msg}`)
      .join("; ");
  }
  return `${response.status} ${response.statusText || "error"}`;
}

export function createApi({ token, onAuthFailure }) {
  async function call(method, path, params = {}) {
    const url = new URL(BASE + path, window.location.origin);
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
    } catch {
      throw new ApiError(0, "The server did not answer. Is it running?");
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const error = new ApiError(response.status, describe(body, response), body);
      if (error.authFailure) onAuthFailure(error);
      throw error;
    }
    return body;
  }

  return {
    jobs: (limit, offset) => call("GET", "", { limit, offset }),
    job: (id) => call("GET", `/${id}`),
    start: (params) => call("POST", "", params),
    cancel: (id) => call("POST", `/${id}/cancel`),
    resume: (id) => call("POST", `/${id}/resume`),
    rollbackJobs: (ids, dryRun, keepLaterRuns = false) =>
      call("POST", "/rollback", { jobs: ids.join(","), dry_run: dryRun, force: false, keep_later_runs: keepLaterRuns }),
    issues: (id, kind, limit, offset) => call("GET", `/${id}/issues`, { kind, limit, offset }),
    preview: (id, limit) => call("GET", `/${id}/preview`, { limit }),
    audit: (id) => call("GET", `/${id}/audit`),
    timeline: (id, slices) => call("GET", `/${id}/timeline`, { slices }),
    changeLimits: (id, limits) => call("POST", `/${id}/limits`, limits),
    verify: () => call("GET", "/verify"),
  };
}
