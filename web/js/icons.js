// MCP icons (servers, tools, prompts, resources) as the page shows them.
//
// Only `data:` images of raster or SVG types and `https:` URLs are used (the platform
// filters them too); each becomes a 16 px <img>, and an SVG shown with <img> never runs
// its script. Shared by the sidebar panels, the server badges and the tool cards.

import { h } from "./dom.js";

const ICON_SRC = /^(https:\/\/[^\s"'<>]+|data:image\/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=]+)$/i;

/**
 * An MCP icon list as one 16 px <img> (the one for the colour scheme when the server
 * gave themes). Null when none is usable.
 * @param {Array<{src: string, theme?: string}> | null | undefined} icons
 * @returns {HTMLImageElement | null}
 */
export function iconImg(icons) {
  const dark = window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  const usable = (icons ?? []).filter((icon) => typeof icon.src === "string" && ICON_SRC.test(icon.src));
  const icon = usable.find((i) => i.theme === dark) ?? usable.find((i) => !i.theme) ?? usable[0];
  if (!icon) return null;
  return h("img", { class: "mcp-icon", src: icon.src, alt: "", width: "16", height: "16", referrerpolicy: "no-referrer", decoding: "async" });
}
