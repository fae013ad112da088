// cascadeflow API docs: renders /openapi.json and sends requests from the browser (same origin only).
// Vanilla JS, no dependencies; everything is built with textContent (no HTML from the description or answers).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const METHODS = ["get", "post", "delete"];

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  const credential = $("credential");
  credential.value = sessionStorage.getItem("cascadeflow-docs-key") || "";
  credential.addEventListener("change", () => sessionStorage.setItem("cascadeflow-docs-key", credential.value));
  $("auth").addEventListener("submit", (event) => event.preventDefault()); // Enter in the key field sends nothing

  function headersFor(path, hasBody) {
    const headers = {};
    if (hasBody) headers["content-type"] = "application/json";
    const key = credential.value.trim();
    if (path.startsWith("/v1/messages")) {
      headers["anthropic-version"] = "2023-06-01";
      if (key) headers["x-api-key"] = key;
    } else if (key) {
      headers["authorization"] = "Bearer " + key;
    }
    return headers;
  }

  function operationView(path, method, op) {
    const body = el("div");
    if (op.description) body.append(el("p", {}, op.description));
    if (op.security) body.append(el("p", { class: "muted" }, "Needs the master key."));
    const inputs = {};
    for (const param of op.parameters || []) {
      const id = `${method}-${path}-${param.name}`;
      const input = el("input", { id, "data-param": param.name, "data-in": param.in,
        placeholder: param.schema && param.schema.enum ? param.schema.enum.join(" | ") : param.in });
      inputs[param.name] = input;
      body.append(el("label", { for: id }, `${param.name} (${param.in}${param.required ? ", required" : ""})`), input);
    }
    let textarea = null;
    const content = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
    if (content) {
      const id = `${method}-${path}-body`;
      const example = content.schema && content.schema.example;
      textarea = el("textarea", { id, spellcheck: "false" });
      textarea.value = example ? JSON.stringify(example, null, 2) : "{}";
      body.append(el("label", { for: id }, "JSON body"), textarea);
    }
    const send = el("button", { type: "button" }, "Send");
    const status = el("div", { class: "status", role: "status" });
    const output = el("pre", { hidden: "" });
    send.addEventListener("click", async () => {
      let url = path;
      const query = new URLSearchParams();
      for (const [name, input] of Object.entries(inputs)) {
        if (!input.value) continue;
        if (input.dataset.in === "path") url = url.replace(`{${name}}`, encodeURIComponent(input.value));
        else if (input.dataset.in === "query") query.set(name, input.value);
      }
      if (query.toString()) url += "?" + query;
      status.textContent = "…";
      try {
        const response = await fetch(url.replace(/^\//, ""), {
          method: method.toUpperCase(), headers: headersFor(path, !!textarea),
          body: textarea ? textarea.value : undefined, credentials: "omit",
        });
        const text = await response.text();
        let shown = text;
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON: as received */ }
        const notes = [...response.headers].filter(([k]) => k.startsWith("x-cascadeflow-")).map(([k, v]) => `${k}: ${v}`);
        status.textContent = `${response.status} ${response.statusText}`;
        output.textContent = (notes.length ? notes.join("\n") + "\n\n" : "") + shown;
      } catch (error) {
        status.textContent = "request failed: " + error;
        output.textContent = "";
      }
      output.hidden = false;
    });
    body.append(send, status, output);
    const summary = el("summary", {}, el("span", { class: `method ${method}` }, method), el("span", { class: "path" }, path),
      el("span", { class: "muted" }, op.summary || ""));
    return el("details", { class: "op", "data-method": method, "data-path": path }, summary, body);
  }

  async function main() {
    let spec;
    try {
      const response = await fetch("openapi.json", { credentials: "omit" });
      spec = await response.json();
    } catch (error) {
      $("intro").textContent = "The API description could not be loaded: " + error;
      return;
    }
    $("intro").textContent = `${spec.info.title} ${spec.info.version}. ${spec.info.description || ""}`;
    const tags = (spec.tags || []).map((t) => t.name);
    const groups = new Map(tags.map((t) => [t, []]));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const tag = (item[method].tags || ["other"])[0];
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push(operationView(path, method, item[method]));
      }
    }
    const target = $("operations");
    for (const [tag, views] of groups) {
      if (!views.length) continue;
      const about = (spec.tags || []).find((t) => t.name === tag);
      target.append(el("h2", { id: "tag-" + tag }, tag), ...(about ? [el("p", { class: "muted" }, about.description)] : []), ...views);
    }
    document.body.dataset.ready = "true";
  }
  main();
})();
