// Building DOM nodes without HTML strings.
//
// `h(tag, attrs, ...children)` creates an element; string children become text nodes, so
// nothing passed here is ever parsed as HTML. Attributes starting with "on" are refused:
// listeners are added with addEventListener by the caller, never from data.

/**
 * Create an element.
 * @param {string} tag
 * @param {object | null} [attrs] Attributes (`class`, `for`, `data-*`, `aria-*`…); null or
 *   false values are skipped, true sets an empty attribute.
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.toLowerCase().startsWith("on")) throw new Error(`event attribute ${key} refused`);
    node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Remove every child of `node`. */
export function clear(node) {
  node.replaceChildren();
}
