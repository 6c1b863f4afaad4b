// Switchboard console: progressive enhancement only. Every page works without this file;
// it adds the viewer's time zone, confirmations, the live schedule preview and live updates.
"use strict";

const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const localFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});

function csrfToken() {
  const main = document.getElementById("main");
  return main ? main.dataset.csrf || "" : "";
}

function localTimes(root) {
  for (const node of root.querySelectorAll("time[data-local]")) {
    if (node.dataset.done) continue;
    node.dataset.done = "1";
    const moment = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) continue;
    const text = localFormat.format(moment);
    if (node.textContent.trim()) {
      const yours = document.createElement("span");
      yours.className = "yours";
      yours.textContent = `your time (${viewerZone}): ${text}`;
      node.after(document.createElement("br"), yours);
    } else {
      node.textContent = `· your time: ${text}`;
      node.classList.add("yours");
    }
  }
}

function confirmations() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
}

function schedulePreview() {
  const cron = document.querySelector("[data-preview-cron]");
  const zone = document.querySelector("[data-preview-zone]");
  const after = document.querySelector("[data-preview-after]");
  const box = document.getElementById("preview");
  if (!cron || !zone || !box) return;
  for (const button of document.querySelectorAll("[data-no-js-preview]")) button.hidden = true;
  let timer = 0;
  let asked = 0;
  const update = async () => {
    const mine = ++asked;
    if (!cron.value.trim()) {
      box.replaceChildren(paragraph("empty", "Type a cron expression to see when it fires."));
      return;
    }
    const query = new URLSearchParams({
      cron: cron.value, timezone: zone.value || "UTC", after: after ? after.value : "",
    });
    const answer = await fetch(`/console/schedules/preview?${query}`, { credentials: "same-origin" });
    if (mine !== asked) return; // a later keystroke asked again
    const body = await answer.json();
    if (body.problem) {
      box.replaceChildren(paragraph("problem", body.problem));
      return;
    }
    const list = document.createElement("ol");
    list.className = "fires";
    for (const fire of body.fire_times) {
      const item = document.createElement("li");
      const inZone = document.createElement("span");
      inZone.textContent = fire.in_zone;
      const time = document.createElement("time");
      time.setAttribute("datetime", fire.at);
      time.dataset.local = "";
      item.append(inZone, " ", time);
      if (fire.note) {
        const note = document.createElement("strong");
        note.className = "dst";
        note.textContent = fire.note;
        item.append(document.createElement("br"), note);
      }
      list.append(item);
    }
    box.replaceChildren(list);
    localTimes(box);
  };
  const soon = () => { window.clearTimeout(timer); timer = window.setTimeout(update, 200); };
  cron.addEventListener("input", soon);
  zone.addEventListener("input", soon);
  if (after) after.addEventListener("input", soon);
}

function paragraph(cls, text) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  return p;
}

function liveRuns() {
  const table = document.getElementById("runs");
  if (!table || !table.dataset.live || !window.EventSource) return;
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  const source = new EventSource(table.dataset.live);
  source.addEventListener("ready", () => { if (state) state.textContent = "Live: new runs and status changes appear as they happen."; table.dataset.ready = "1"; });
  source.addEventListener("run", (event) => {
    const run = JSON.parse(event.data);
    const holder = document.createElement("tbody");
    holder.innerHTML = run.html; // rendered and escaped by the server
    const row = holder.firstElementChild;
    if (!row) return;
    row.classList.add("fresh");
    const old = body.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
    if (old) old.replaceWith(row); else body.prepend(row);
    const none = document.getElementById("no-runs");
    if (none) none.remove();
    localTimes(row);
  });
  source.addEventListener("error", () => { if (state) state.textContent = "Reconnecting…"; });
}

function followLog() {
  const log = document.getElementById("log");
  if (!log || !log.dataset.follow || !window.EventSource) return;
  const source = new EventSource(log.dataset.follow);
  log.dataset.following = "1";
  source.addEventListener("line", (event) => {
    const line = JSON.parse(event.data);
    const span = document.createElement("span");
    span.className = line.stream;
    span.textContent = line.message;
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(span, "\n");
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("finished", (event) => {
    source.close();
    log.dataset.following = "";
    const status = document.getElementById("run-status");
    if (status) status.textContent = JSON.parse(event.data).status;
    window.location.reload(); // the output, timeline and delivery are final now
  });
}

document.addEventListener("DOMContentLoaded", () => {
  liveRuns();
  followLog();
  localTimes(document);
  confirmations();
  schedulePreview();
  for (const hook of window.switchboardPages || []) hook();
});
