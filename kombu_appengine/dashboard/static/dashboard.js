// The dashboard's page: polls /dashboard/api/queues and draws it.
// Everything the server sends is put in the page as text (textContent),
// never as HTML: payloads, tags and names may hold anything.
"use strict";

(function () {
  const DATA = "/dashboard/api/queues";
  const TOKEN_KEY = "pullqueue-dashboard-token";
  const REFRESH_MS = 2000;
  const csrf = document.querySelector('meta[name="dashboard-csrf"]').content;
  const readOnly = document.querySelector('meta[name="dashboard-mode"]').content !== "actions";
  let timer = null;
  let loading = false;
  // Asked to refresh while a refresh was under way: once it ends, refresh again.
  let again = false;

  function byId(id) {
    return document.getElementById(id);
  }

  // An element with attributes and children; strings become text nodes.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function authHeaders() {
    const held = token();
    return held ? { Authorization: "Bearer " + held } : {};
  }

  // "42 s", "3 min", "5 h", "2 d".
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  async function errorText(answer) {
    try {
      const body = await answer.json();
      if (body && body.error && body.error.message) {
        return answer.status + ": " + body.error.message;
      }
    } catch (ignored) {
      // Not Google's error body: the status says enough.
    }
    return answer.status + " " + answer.statusText;
  }

  function showError(text) {
    const node = byId("error");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function showLogin(message) {
    byId("login").hidden = false;
    byId("login-error").textContent = message || "";
    byId("projects").replaceChildren();
    byId("status").textContent = "no access token";
  }

  function schedule() {
    clearTimeout(timer);
    if (byId("auto-refresh").checked) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    again = false;
    const sent = token();
    try {
      const answer = await fetch(DATA, { headers: authHeaders(), cache: "no-store" });
      if (token() !== sent) {
        // Signed in or out meanwhile: this answer is not for the token held now.
        again = true;
        return;
      }
      if (answer.status === 401) {
        const hadToken = token() !== null;
        sessionStorage.removeItem(TOKEN_KEY);
        byId("forget-token").hidden = true;
        showLogin(hadToken ? "The server refused that token (" + (await errorText(answer)) + ")" : "");
        return;
      }
      if (!answer.ok) {
        const text = await errorText(answer);
        if (answer.status === 403 && token() !== null) {
          sessionStorage.removeItem(TOKEN_KEY);
          showLogin("The server refused that token (" + text + ")");
        } else {
          showError("Could not read the queues: " + text);
        }
        return;
      }
      const data = await answer.json();
      if (token() !== sent) {
        again = true;
        return;
      }
      byId("login").hidden = true;
      byId("forget-token").hidden = token() === null;
      showError("");
      draw(data);
      byId("status").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (failure) {
      showError("Could not reach the server: " + failure);
    } finally {
      loading = false;
      if (again) refresh();
      else if (byId("login").hidden) schedule();
    }
  }

  function draw(data) {
    const groups = data.projects.map((group) => drawProject(group, data));
    if (data.hidden) {
      groups.push(
        el("p", { class: "more", id: "hidden-queues" },
          data.hidden + (data.hidden === 1 ? " queue is" : " queues are") +
          " not shown: the access token's account is not in their acl (queue.yaml)")
      );
    }
    byId("projects").replaceChildren(...groups);
  }

  function drawProject(group, data) {
    const title = group.project === null
      ? "Any project id (none has held a task yet)"
      : "Project " + group.project;
    const section = el("section", { class: "project", "data-project": group.project }, el("h2", {}, title));
    if (!group.queues.length) section.append(el("p", { class: "more" }, "No pull queue to show."));
    for (const queue of group.queues) section.append(drawQueue(group.project, queue, data));
    return section;
  }

  function stat(name, value) {
    return el("td", { class: "number", "data-stat": name }, String(value));
  }

  function drawQueue(project, queue, data) {
    // The API's oldestTask is the earliest ETA, not the earliest enqueue: a
    // lease moves a task's ETA to the lease's end, a release to its time.
    const waited = queue.oldestTask ? duration(data.now - queue.oldestTask) : "–";
    const heads = [
      ["Tasks"], ["Leased now"],
      ["Longest wait", "How long the task available longest has waited for a worker: since it was "
        + "enqueued, or since its lease ran out or it was handed back (the API's oldestTask). "
        + "0 s when every task is leased."],
      ["Leased last minute"], ["Leased last hour"], ["maxLeases"]];
    const stats = el("table", { class: "stats" },
      el("tr", {}, ...heads.map(([name, title]) => el("th", { title: title }, name))),
      el("tr", {},
        stat("totalTasks", queue.totalTasks),
        stat("leasedNow", queue.leasedNow),
        stat("oldestTask", waited),
        stat("leasedLastMinute", queue.leasedLastMinute),
        stat("leasedLastHour", queue.leasedLastHour),
        stat("maxLeases", queue.maxLeases === null || queue.maxLeases === undefined ? "none" : queue.maxLeases)));
    const box = el("div", { class: "queue", "data-queue": queue.name }, el("h3", {}, "Queue " + queue.name), stats);
    if (!readOnly && project !== null && queue.totalTasks > 0) {
      const purge = el("button", { type: "button", class: "purge danger" }, "Purge queue");
      purge.addEventListener("click", () => act(
        "/dashboard/api/purge", { project: project, queue: queue.name },
        "Delete every task of queue " + queue.name + " (" + queue.totalTasks + " now), leased ones too?"));
      box.append(purge);
    }
    if (!queue.tasks.length) {
      box.append(el("p", { class: "more" }, "No tasks."));
      return box;
    }
    if (queue.tasks.length < queue.totalTasks) {
      box.append(el("p", { class: "more truncated-list" },
        "Showing the first " + queue.tasks.length + " of " + queue.totalTasks + " tasks, in lease order."));
    }
    const head = ["Task", "Tag", "Leases", "Lease", "Enqueued", "Payload"];
    if (!readOnly) head.push("");
    const table = el("table", { class: "tasks" }, el("tr", {}, ...head.map((name) => el("th", {}, name))));
    for (const task of queue.tasks) table.append(drawTask(project, queue.name, task, data.now));
    box.append(table);
    return box;
  }

  function drawTask(project, queueName, task, now) {
    const leased = task.leaseExpires !== null;
    const lease = leased
      ? el("span", { class: "leased" }, "leased, expires in " + duration(task.leaseExpires - now))
      : el("span", {}, "available");
    const preview = task.preview;
    const text = preview.text + (preview.truncated ? "\n… (cut short)" : "");
    const row = el("tr", { "data-task": task.id, "data-leased": leased ? "yes" : "no" },
      el("td", { class: "task-id" }, task.id),
      el("td", { class: "tag" }, task.tag === null || task.tag === undefined ? "" : task.tag),
      el("td", { class: "number retries" }, String(task.retryCount)),
      el("td", { class: "lease" }, lease),
      el("td", { class: "enqueued" }, duration(now - task.enqueued) + " ago"),
      el("td", { class: "payload", "data-format": preview.format },
        el("span", { class: "label" }, preview.label),
        el("pre", { class: "preview" }, text)));
    if (!readOnly && project !== null) {
      const remove = el("button", { type: "button", class: "delete danger" }, "Delete");
      remove.addEventListener("click", () => act(
        "/dashboard/api/delete", { project: project, queue: queueName, task: task.id },
        "Delete task " + task.id + " of queue " + queueName + "?"));
      row.append(el("td", {}, remove));
    }
    return row;
  }

  async function act(path, body, question) {
    if (!window.confirm(question)) return;
    try {
      const answer = await fetch(path, {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json", "X-Dashboard-Token": csrf }, authHeaders()),
        body: JSON.stringify(body),
      });
      showError(answer.ok ? "" : "The server refused: " + (await errorText(answer)));
    } catch (failure) {
      showError("Could not reach the server: " + failure);
    }
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("mode").textContent = readOnly ? "read-only" : "";
    byId("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const given = byId("token").value.trim();
      if (!given) return;
      sessionStorage.setItem(TOKEN_KEY, given);
      byId("token").value = "";
      refresh();
    });
    byId("forget-token").addEventListener("click", () => {
      clearTimeout(timer);
      sessionStorage.removeItem(TOKEN_KEY);
      byId("forget-token").hidden = true;
      showLogin("");
    });
    byId("auto-refresh").addEventListener("change", () => (byId("auto-refresh").checked ? refresh() : clearTimeout(timer)));
    refresh();
  });
})();
