// Forms generated from the JSON Schema of an MCP elicitation request.
//
// MCP restricts `requestedSchema` to a flat object of primitive properties: string (with
// `format` email / uri / date / date-time, `minLength` / `maxLength`, or an `enum` with
// optional `enumNames`, or `oneOf` of `{const, title}`), number / integer (`minimum` /
// `maximum`), boolean, and multi-select enums (SEP-1330: an array whose `items` are an
// `enum` or `anyOf` of `{const, title}`, with `minItems` / `maxItems`), shown as
// checkboxes. Each becomes a labelled control; the browser's own constraint
// validation (required, min, max, type=email…) checks the input before it is sent, and
// `read()` converts the values to the schema's types.

import { h } from "./dom.js";

const INPUT_TYPES = { email: "email", uri: "url", date: "date", "date-time": "datetime-local" };

/**
 * Build a form for `schema`.
 * @param {object} schema The requested JSON Schema (an object schema).
 * @param {string} idPrefix Prefix for the controls' ids.
 * @returns {{element: HTMLElement, read: () => ({ok: true, content: object} | {ok: false})}}
 */
export function schemaForm(schema, idPrefix) {
  const properties = schema && typeof schema.properties === "object" ? schema.properties : {};
  const required = new Set(Array.isArray(schema?.required) ? schema.required : []);
  const fields = [];
  const element = h("div", { class: "schema-form" });
  for (const [name, spec] of Object.entries(properties)) {
    const id = `${idPrefix}-${name.replace(/[^\w-]/g, "_")}`;
    const field = buildField(name, spec ?? {}, id, required.has(name));
    fields.push(field);
    element.append(field.row);
  }
  if (fields.length === 0) element.append(h("p", { class: "muted" }, "No details are requested."));
  const read = () => {
    const content = {};
    for (const field of fields) {
      field.check?.();
      if (!field.control.checkValidity()) {
        field.control.reportValidity();
        return { ok: false };
      }
      const value = field.value();
      if (value !== undefined) content[field.name] = value;
    }
    return { ok: true, content };
  };
  return { element, read };
}

function buildField(name, spec, id, isRequired) {
  const label = h("label", { for: id }, spec.title || name, isRequired ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null);
  const help = spec.description ? h("div", { class: "help" }, spec.description) : null;
  const choices = multiOptions(spec);
  if (choices) return multiSelectField(name, spec, id, isRequired, choices, help);
  const options = enumOptions(spec);
  let control;
  let value;
  if (spec.type === "boolean") {
    control = h("input", { id, type: "checkbox" });
    control.checked = Boolean(spec.default);
    value = () => control.checked;
    const row = h("div", { class: "field field-check" }, control, label, help);
    return { name, control, value, row };
  }
  if (options) {
    control = h("select", { id });
    if (!isRequired) control.append(h("option", { value: "" }, "—"));
    for (const option of options) control.append(h("option", { value: String(option.value) }, option.label));
    if (spec.default !== undefined) control.value = String(spec.default);
    value = () => {
      if (control.value === "") return undefined;
      const found = options.find((o) => String(o.value) === control.value);
      return found ? found.value : control.value;
    };
  } else if (spec.type === "number" || spec.type === "integer") {
    control = h("input", { id, type: "number", step: spec.type === "integer" ? "1" : "any" });
    if (spec.minimum !== undefined) control.min = String(spec.minimum);
    if (spec.maximum !== undefined) control.max = String(spec.maximum);
    if (spec.default !== undefined) control.value = String(spec.default);
    value = () => (control.value === "" ? undefined : Number(control.value));
  } else {
    control = h("input", { id, type: INPUT_TYPES[spec.format] ?? "text" });
    if (spec.minLength !== undefined) control.minLength = spec.minLength;
    if (spec.maxLength !== undefined) control.maxLength = spec.maxLength;
    if (spec.default !== undefined) control.value = String(spec.default);
    value = () => (control.value === "" ? undefined : control.value);
  }
  if (isRequired) control.required = true;
  const row = h("div", { class: "field" }, label, control, help);
  return { name, control, value, row };
}

function enumOptions(spec) {
  if (Array.isArray(spec.enum)) {
    const names = Array.isArray(spec.enumNames) ? spec.enumNames : [];
    return spec.enum.map((v, n) => ({ value: v, label: String(names[n] ?? v) }));
  }
  const choices = spec.oneOf ?? spec.anyOf;
  if (Array.isArray(choices) && choices.every((c) => c && "const" in c)) {
    return choices.map((c) => ({ value: c.const, label: String(c.title ?? c.const) }));
  }
  return null;
}

/** The options of a multi-select enum (an array of enum values), or null. */
function multiOptions(spec) {
  if (spec.type !== "array" || !spec.items || typeof spec.items !== "object") return null;
  const options = enumOptions(spec.items);
  return options && options.length ? options : null;
}

/**
 * A multi-select enum: one checkbox per option in a fieldset; its value is the array of
 * the checked options' values (in the schema's order). `minItems` / `maxItems` (and
 * `required`: at least one) are checked before the answer is sent.
 */
function multiSelectField(name, spec, id, isRequired, options, help) {
  const defaults = Array.isArray(spec.default) ? spec.default.map(String) : [];
  const boxes = options.map((option, n) => {
    const box = h("input", { id: `${id}-${n}`, type: "checkbox", "data-value": String(option.value) });
    box.checked = defaults.includes(String(option.value));
    return [option, box];
  });
  const min = Number.isInteger(spec.minItems) ? spec.minItems : isRequired ? 1 : 0;
  const max = Number.isInteger(spec.maxItems) ? spec.maxItems : null;
  const legend = h("legend", null, spec.title || name, isRequired ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null);
  const row = h("fieldset", { class: "field field-multi", id },
    legend,
    ...boxes.map(([option, box]) => h("div", { class: "field-check" }, box, h("label", { for: box.id }, option.label))),
    help);
  const control = boxes[0][1];
  const checked = () => boxes.filter(([, box]) => box.checked).map(([option]) => option.value);
  const check = () => {
    const count = checked().length;
    let problem = "";
    if (count < min) problem = `Choose at least ${min}.`;
    else if (max !== null && count > max) problem = `Choose at most ${max}.`;
    control.setCustomValidity(problem);
  };
  for (const [, box] of boxes) box.addEventListener("change", () => control.setCustomValidity(""));
  return { name, control, value: checked, row, check };
}
