// larder dashboard: keeps the figures marked data-live current (polling the
// overview every 3 seconds, same origin, with the sign-in cookie) and asks for
// confirmation before the actions marked data-confirm. No build step, no library.
"use strict";

function lookup(data, path) {
  return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), data);
}

function show(el, value) {
  if (value === undefined || value === null) return;
  if (el.dataset.format === "percent") {
    el.textContent = (Number(value) * 100).toFixed(1) + " %";
  } else {
    el.textContent = value;
  }
}

async function refresh(base) {
  try {
    const res = await fetch(base + "/api/overview", { credentials: "same-origin", headers: { accept: "application/json" } });
    if (!res.ok) return;
    const data = await res.json();
    if (data.jobs) data.jobs.queued_total = Object.values(data.jobs.queued).reduce((a, b) => a + b, 0);
    for (const el of document.querySelectorAll("[data-live]")) show(el, lookup(data, el.dataset.live));
  } catch (_) {
    // The next poll tries again; the page keeps its last figures.
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const base = document.body.dataset.base || "";
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (document.querySelector("[data-live]")) setInterval(() => refresh(base), 3000);
});
