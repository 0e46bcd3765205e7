// The campaign page: poll progress.json and update the bar and the figures in
// place, until the campaign is over. A file, not an inline script: nginx's
// Content-Security-Policy allows scripts from 'self' only.
"use strict";

(() => {
  const box = document.getElementById("progress");
  if (!box) return;
  const RUNNING_EVERY_MS = 3000;
  const AFTER_ERROR_MS = 10000;
  const set = (id, value) => {
    const element = document.getElementById(id);
    const text = value === null || value === undefined || value === "" ? "—" : String(value);
    if (element.textContent !== text) element.textContent = text;
  };
  const count = (n) => Number(n).toLocaleString("en");

  async function poll() {
    let p;
    try {
      const response = await fetch(box.dataset.url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      p = await response.json();
    } catch (error) {
      setTimeout(poll, AFTER_ERROR_MS);
      return;
    }
    document.getElementById("bar").value = p.percent;
    set("percent", `${p.percent}%`);
    set("status", p.status_label);
    set("summary", p.summary);
    set("estimate", p.estimate);
    set("next_page", p.next_page_text);
    set("waiting", p.waiting_text);
    set("found", count(p.found));
    const watch = document.getElementById("watch");
    if (watch.textContent !== p.watch_text) watch.textContent = p.watch_text;
    watch.hidden = !p.watch_text;
    if (document.getElementById("found_by")) set("found_by", p.found_by);
    set("acted", count(p.acted));
    if (document.getElementById("muted")) set("muted", count(p.muted));
    set("skipped", p.skipped_text);
    set("failed", count(p.failed));
    const error = document.getElementById("error");
    if (error.textContent !== (p.error || "")) error.textContent = p.error || "";
    error.hidden = !p.error;
    box.dataset.status = p.status;
    if (p.status === "running" || p.muting) setTimeout(poll, RUNNING_EVERY_MS);
  }
  if (box.dataset.status === "running" || box.dataset.muting === "true") {
    setTimeout(poll, RUNNING_EVERY_MS);
  }
})();
