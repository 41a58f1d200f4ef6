// larder dashboard: keeps every page current without a reload, and asks for
// confirmation before the actions marked data-confirm. No build step, no library.
//
// Every 5 seconds while the tab is visible, the page asks the server for itself
// again (same origin, with the sign-in cookie) and puts the new content of its
// live part (#live) in place of the old. The part is left alone while the user
// is busy in it: a field with focus or with something typed, or text selected.
"use strict";

const EVERY_MS = 5000;

function busy(region) {
  const active = document.activeElement;
  if (active && active !== document.body && region.contains(active) && active.matches("input, select, textarea")) return true;
  for (const field of region.querySelectorAll("input, textarea")) {
    if (field.type !== "hidden" && field.value !== field.defaultValue) return true;
  }
  const selection = window.getSelection();
  return Boolean(selection && !selection.isCollapsed && region.contains(selection.anchorNode));
}

async function refresh() {
  const region = document.getElementById("live");
  if (!region || document.hidden || busy(region)) return;
  // The flash of the last action is outside #live; ask without it.
  const url = new URL(window.location.href);
  url.searchParams.delete("done");
  try {
    const res = await fetch(url, { credentials: "same-origin", headers: { accept: "text/html" } });
    // Signed out meanwhile (the sign-in page), or an error: keep what is shown.
    if (!res.ok || res.redirected) return;
    const fresh = new DOMParser().parseFromString(await res.text(), "text/html").getElementById("live");
    if (fresh && !busy(region)) region.replaceChildren(...fresh.childNodes);
  } catch (_) {
    // The next poll tries again; the page keeps its last figures.
  }
}

// On the document, so that forms put in place by a refresh ask too.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("live")) setInterval(refresh, EVERY_MS);
});
