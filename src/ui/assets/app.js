// cairn ui: progressive enhancement only; every page works without this script.
"use strict";

// A filter box above long tables: type to keep the rows that contain the text.
for (const table of document.querySelectorAll("main table")) {
  const rows = Array.from(table.tBodies[0]?.rows ?? []);
  if (rows.length < 10) continue;
  const input = document.createElement("input");
  input.type = "search";
  input.placeholder = "Filter rows";
  input.setAttribute("aria-label", "Filter the rows of the table below");
  input.addEventListener("input", () => {
    const wanted = input.value.toLowerCase();
    for (const row of rows) row.hidden = !row.textContent.toLowerCase().includes(wanted);
  });
  table.before(input);
}

// The Live view follows runs as they happen: the server says when a run's feed changed, and the part of the
// page that shows runs is fetched again (at most every quarter second).
const live = document.querySelector("[data-live]");
if (live && "EventSource" in window) {
  let pending = false;
  const refresh = async () => {
    pending = false;
    const answer = await fetch("/live?fragment=1", { credentials: "same-origin" });
    if (!answer.ok) return;
    const html = await answer.text();
    const holder = document.createElement("div");
    holder.innerHTML = html;
    const fresh = holder.querySelector("[data-live]");
    if (fresh) live.innerHTML = fresh.innerHTML;
  };
  const events = new EventSource("/events");
  events.addEventListener("change", () => {
    if (!pending) {
      pending = true;
      setTimeout(refresh, 250);
    }
  });
}
