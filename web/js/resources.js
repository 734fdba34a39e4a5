// The resources panel: each ready server's MCP resources and resource templates.
//
// Design note: the list comes from `session_info` (`resources`, `resource_templates`), like
// the tools and prompts panels, and is replaced whole by each `resources_changed`. Nothing here fetches a resource: a click asks the page to
// send `read_resource` (the platform reads it from its server, and the tab's conversation
// is then told of its updates); a template's variables are filled in a form (app.js, with
// autocompletion through `complete`) and expanded here into the URI to read. The RFC 6570
// code below is pure (strings in, strings out) so the browser tests call it directly.

import { h } from "./dom.js";
import { iconImg } from "./icons.js";

// RFC 6570 §3.2.1, the operator table: what an expression's operator puts first, between
// values, whether it names them, what an empty value names, and what it leaves unencoded.
const OPERATORS = {
  "": { first: "", sep: ",", named: false, ifEmpty: "", reserved: false },
  "+": { first: "", sep: ",", named: false, ifEmpty: "", reserved: true },
  "#": { first: "#", sep: ",", named: false, ifEmpty: "", reserved: true },
  ".": { first: ".", sep: ".", named: false, ifEmpty: "", reserved: false },
  "/": { first: "/", sep: "/", named: false, ifEmpty: "", reserved: false },
  ";": { first: ";", sep: ";", named: true, ifEmpty: "", reserved: false },
  "?": { first: "?", sep: "&", named: true, ifEmpty: "=", reserved: false },
  "&": { first: "&", sep: "&", named: true, ifEmpty: "=", reserved: false },
};

const EXPRESSION = /\{([^{}]*)\}/g;
const UNRESERVED = /[A-Za-z0-9\-._~]/;
const RESERVED = /[:/?#[\]@!$&'()*+,;=]/;

/** The expression's operator and its variables ({name, prefix}) (`{?a,b:3}`). */
function parseExpression(body) {
  const operator = body[0] in OPERATORS && body[0] !== "" ? body[0] : "";
  const specs = body.slice(operator.length).split(",").filter(Boolean).map((spec) => {
    const [name, prefix] = spec.replace(/\*$/, "").split(":");
    return { name, prefix: prefix === undefined ? null : Number(prefix) };
  });
  return { operator, specs };
}

/**
 * The variable names of a URI template, in order, each once.
 * @param {string} template e.g. "demo://resource/dynamic/text/{resourceId}"
 * @returns {string[]}
 */
export function templateVariables(template) {
  const names = [];
  for (const [, body] of template.matchAll(EXPRESSION)) {
    for (const { name } of parseExpression(body).specs) if (name && !names.includes(name)) names.push(name);
  }
  return names;
}

/** Percent-encode `text` (UTF-8), keeping unreserved characters, and with `reserved` the
 * reserved ones and %XX triplets already there. */
function encode(text, reserved) {
  let out = "";
  const chars = Array.from(text);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    if (UNRESERVED.test(c) || (reserved && RESERVED.test(c))) out += c;
    else if (reserved && c === "%" && /^[0-9A-Fa-f]{2}$/.test(chars.slice(i + 1, i + 3).join(""))) out += c;
    else for (const byte of new TextEncoder().encode(c)) out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * Expand a URI template (RFC 6570, string values; a variable that is absent or null is
 * left out as the RFC says for an undefined one).
 * @param {string} template
 * @param {Record<string, string | null | undefined>} values
 * @returns {string}
 */
export function expandTemplate(template, values) {
  return template.replace(EXPRESSION, (_, body) => {
    const { operator, specs } = parseExpression(body);
    const op = OPERATORS[operator];
    const parts = [];
    for (const { name, prefix } of specs) {
      const raw = values[name];
      if (raw === undefined || raw === null) continue;
      const value = encode(prefix === null ? String(raw) : Array.from(String(raw)).slice(0, prefix).join(""), op.reserved);
      if (!op.named) parts.push(value);
      else parts.push(value === "" ? `${name}${op.ifEmpty}` : `${name}=${value}`);
    }
    return parts.length ? op.first + parts.join(op.sep) : "";
  });
}

/** One entry of the panel: a button with the icon, the name, the server, the MIME type and
 * the description. */
function entry(item, attrs, onClick) {
  const label = item.title || item.name;
  const button = h("button", { class: "cap cap-button", type: "button", title: item.description ? `${item.uri}\n${item.description}` : item.uri, ...attrs },
    iconImg(item.icons), h("span", { class: "cap-name" }, label), h("span", { class: "cap-server" }, item.server),
    item.mime_type ? h("span", { class: "cap-mime" }, item.mime_type) : null,
    h("span", { class: "cap-uri" }, item.uri),
    item.description ? h("span", { class: "cap-desc" }, item.description) : null);
  button.addEventListener("click", () => onClick(item));
  return h("li", null, button);
}

/**
 * Fill the resources panel.
 * @param {{list: HTMLElement, count: HTMLElement}} ui The panel's list and its count.
 * @param {{resources: object[], templates: object[]}} data From `session_info` or `resources_changed`.
 * @param {{onRead: (resource: object) => void, onTemplate: (template: object) => void}} actions
 */
export function renderResources(ui, { resources, templates }, { onRead, onTemplate }) {
  ui.count.textContent = String(resources.length + templates.length);
  const items = resources.map((r) => entry(r, { class: "cap cap-button resource-item", "data-uri": r.uri, "data-server": r.server }, onRead));
  if (templates.length) {
    items.push(h("li", { class: "cap-heading" }, "Templates"));
    for (const t of templates) items.push(entry(t, { class: "cap cap-button resource-template", "data-template": t.uri, "data-server": t.server }, onTemplate));
  }
  ui.list.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "No resources offered.")]));
}

/**
 * Mark the panel's entry of a resource that changed since this conversation read it.
 * @param {HTMLElement} list
 * @param {string} server
 * @param {string} uri
 */
export function markUpdated(list, server, uri) {
  for (const button of list.querySelectorAll(".resource-item")) {
    if (button.dataset.server === server && button.dataset.uri === uri) button.dataset.updated = "";
  }
}
