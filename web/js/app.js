// The chat page: a reference client of the WebSocket protocol (../shared/PROTOCOL.md).
//
// Design note: one module-level `state` holds what the server told us (conversation,
// servers, tools, prompts, sessions) and the turn being streamed; `handleFrame` is the one
// place where server frames come in, one function per frame type. Everything shown is
// built with DOM calls (dom.js, markdown.js): no server or model text is ever inserted as
// HTML. The conversation view is rebuilt from `session_info` (first frame of every
// connection, and the answer to `load_session`), so a reconnect or a reload shows exactly
// what the server stored.

import { ChatConnection, State, chatUrl, pageToken, tokenRefused } from "./connection.js";
import { clear, h } from "./dom.js";
import { iconImg } from "./icons.js";
import { renderMarkdown } from "./markdown.js";
import { expandTemplate, markUpdated, renderResources, templateVariables } from "./resources.js";
import { schemaForm } from "./schema_form.js";

const STORAGE_KEY = "mcp-platform.conversation";
const RESULT_PREVIEW_CHARS = 4000;

// User-facing texts for error codes (the product documentation's wording, docs/protocol.md#errors).
const ERROR_TEXTS = {
  STORAGE_FULL: "The database cannot be written (disk full or read-only). Nothing stored was changed; free some space and try again.",
  STORAGE_UNAVAILABLE: "The database cannot be reached right now. Nothing stored was changed; try again in a moment.",
  SESSION_NOT_FOUND: "That conversation does not exist any more (it was deleted or removed by retention).",
  MCP_SERVER_UNAVAILABLE: "An MCP server is unavailable: its tools are not offered until it reconnects.",
  TURN_IN_PROGRESS: "An answer is still running in this conversation; wait for it or press Stop.",
};

const ERROR_TITLES = {
  LLM_NOT_CONFIGURED: "The LLM is not configured",
  LLM_UNAVAILABLE: "The LLM provider failed",
  RATE_LIMITED: "Rate limited by the LLM provider",
  STORAGE_FULL: "Storage full",
  STORAGE_UNAVAILABLE: "Storage unavailable",
  SESSION_NOT_FOUND: "Session not found",
  MCP_SERVER_UNAVAILABLE: "MCP server unavailable",
  TOOL_FAILED: "Tool failed",
  INVALID_MESSAGE: "Message refused",
  MESSAGE_TOO_LARGE: "Message too large",
  ATTACHMENT_TOO_LARGE: "Attachment too large",
  TOO_MANY_ATTACHMENTS: "Too many attachments",
  ATTACHMENT_TYPE_NOT_SUPPORTED: "Attachment not supported",
  UNAUTHORIZED: "Not authorised",
  INTERNAL_ERROR: "Platform error",
};

// Codes that only a turn's end carries (its assistant_message follows the error frame).
const TURN_CODES = new Set(["LLM_NOT_CONFIGURED", "LLM_UNAVAILABLE", "RATE_LIMITED"]);

// Codes with which the gateway refuses a user_message before it is stored.
const REFUSED_CODES = new Set(["INVALID_MESSAGE", "MESSAGE_TOO_LARGE", "TURN_IN_PROGRESS", "STORAGE_FULL", "STORAGE_UNAVAILABLE",
  "ATTACHMENT_TOO_LARGE", "TOO_MANY_ATTACHMENTS", "ATTACHMENT_TYPE_NOT_SUPPORTED"]);

const $ = (id) => document.getElementById(id);

const ui = {
  messages: $("messages"),
  empty: $("empty"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  composer: $("composer"),
  title: $("conv-title"),
  model: $("model"),
  servers: $("servers"),
  conn: $("conn"),
  connLabel: $("conn-label"),
  sessions: $("sessions"),
  tools: $("tools"),
  toolCount: $("tool-count"),
  prompts: $("prompts"),
  promptCount: $("prompt-count"),
  resources: $("resources"),
  resourceCount: $("resource-count"),
  toasts: $("toasts"),
  notice: $("notice"),
  expiry: $("expiry"),
  dialog: $("dialog"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  menu: $("menu"),
  attach: $("attach"),
  attachFile: $("attach-file"),
  attachments: $("attachments"),
};

const state = {
  conversationId: sessionStorage.getItem(STORAGE_KEY),
  name: null,
  /** The conversation's title (the model's or the user's; a saved one's is its name). */
  title: null,
  /** The configured LLM providers ({name, model}) and the active one's name. */
  providers: [],
  activeProvider: null,
  /** The provider chosen for this conversation (stored by the server; null: the active one). */
  chosenProvider: null,
  /** The search_results shown instead of the sessions while the search box has text. */
  search: null,
  saved: false,
  model: "",
  /** When retention removes this unsaved conversation (Unix s; null: saved). */
  expiresAt: null,
  /** Seconds an unsaved conversation is kept after its last change (null: saved). */
  expiresAfter: null,
  servers: new Map(),
  tools: [],
  prompts: [],
  /** The ready servers' resources and resource templates (session_info). */
  resources: [],
  templates: [],
  sessions: [],
  /** The sessions frame's next_cursor: more conversations to list (null: none). */
  sessionsCursor: null,
  /** A "Load more" request is on its way (its button is disabled meanwhile). */
  loadingMore: false,
  connected: false,
  running: false,
  /** The request id of the user_message awaiting its turn, if any. */
  pending: null,
  /** The bubble shown for that message (removed if the server refuses it). */
  pendingBubble: null,
  /** The turn view being streamed (see newTurnView). */
  turn: null,
  requestSeq: 0,
  /** Elicitation cards still on screen, by request id (see onElicitation). */
  questions: new Map(),
  /** Approval cards still waiting for a decision, by call id (see onToolApproval). */
  approvals: new Map(),
  /** complete requests on their way: request id → what to do with the answer. */
  completions: new Map(),
  /** Accepted URL elicitations waiting for elicitation_complete, by request id. */
  urlCards: new Map(),
  /** read_resource requests on their way: request id → URI. */
  reads: new Map(),
  /** The pending user_message used an MCP prompt (its expansion is shown once stored). */
  pendingPrompt: false,
  /** The error frame of a turn that failed, shown inline by its assistant_message. */
  turnError: null,
  /** Files attached to the next message: {name, mime_type, size, data} (data: base64). */
  attachments: [],
  /** The files of the message awaiting its turn (back to the chips if it is refused). */
  pendingAttachments: [],
  /** session_info.attachments: the limits (null: attachments are off). */
  attachmentLimits: null,
};

const endpointMeta = document.querySelector('meta[name="mcp-ws-endpoint"]')?.content;
const endpoint = endpointMeta && endpointMeta.startsWith("/") ? endpointMeta : "/ws/chat";

const token = pageToken();
const NOT_AUTHORISED = "Not authorised: open the page with ?token=<your token>";

const connection = new ChatConnection({
  url: () => chatUrl(endpoint, state.conversationId, token),
  onFrame: handleFrame,
  onState: showConnectionState,
  refused: () => tokenRefused(endpoint, token),
});

// -- frames from the server ---------------------------------------------------------------

function handleFrame(frame) {
  switch (frame.type) {
    case "session_info": return onSessionInfo(frame);
    case "assistant_delta": return onDelta(frame, "content");
    case "thinking_delta": return onDelta(frame, "thinking");
    case "tool_execution": return onToolExecution(frame);
    case "user_message_stored": return onUserMessageStored(frame);
    case "regenerating": return onRegenerating(frame);
    case "assistant_message": return onAssistantMessage(frame);
    case "elicitation_request": return onElicitation(frame);
    case "elicitation_closed": return onElicitationClosed(frame);
    case "elicitation_complete": return onElicitationComplete(frame);
    case "tool_approval_request": return onToolApproval(frame);
    case "provider_set": return onProviderSet(frame);
    case "session_cleared": return onSessionCleared(frame);
    case "session_saved": return onSessionSaved(frame);
    case "session_title": return onSessionTitle(frame);
    case "session_export": return onSessionExport(frame);
    case "search_results": return onSearchResults(frame);
    case "session_imported": return onSessionImported(frame);
    case "sessions": return onSessions(frame);
    case "session_deleted": return onSessionDeleted(frame);
    case "server_status": return onServerStatus(frame);
    case "tools_changed": return onToolsChanged(frame);
    case "resources_changed": return onResourcesChanged(frame);
    case "resource_content": return onResourceContent(frame);
    case "completion": return onCompletion(frame);
    case "resource_updated": return onResourceUpdated(frame);
    case "broker_status": return onBrokerStatus(frame);
    case "error": return onError(frame);
    default: console.warn("unknown frame type", frame.type);
  }
}

function onSessionInfo(frame) {
  setConversation(frame.conversation_id, frame.name ?? null, Boolean(frame.saved), frame.title ?? null);
  state.model = frame.model ?? "";
  state.activeProvider = frame.provider ?? null;
  state.providers = frame.providers ?? [];
  state.attachmentLimits = frame.attachments ?? null;
  ui.attach.hidden = !state.attachmentLimits;
  state.chosenProvider = frame.chosen_provider ?? null;
  renderPicker();
  state.servers = new Map((frame.servers ?? []).map((s) => [s.name, s]));
  state.tools = frame.tools ?? [];
  state.prompts = frame.prompts ?? [];
  state.resources = frame.resources ?? [];
  state.templates = frame.resource_templates ?? [];
  // A set-up problem (no API key for the LLM): said before the first message, not after.
  ui.notice.textContent = frame.notice ?? "";
  ui.notice.hidden = !frame.notice;
  state.expiresAt = frame.expires_at ?? null;
  state.expiresAfter = frame.expires_after ?? null;
  state.turn = null;
  state.pending = null;
  state.pendingBubble = null;
  state.pendingPrompt = false;
  state.turnError = null;
  endQuestions(() => true, "no longer waiting");
  endApprovals(() => true, "no longer waiting");
  renderHistory(frame.messages ?? []);
  renderHeader();
  renderTools();
  renderPrompts();
  renderResourcePanel();
  // A turn still running (another tab started it, or we reconnected mid-turn): its frames
  // follow, and Stop must be available.
  setRunning(Boolean(frame.turn_in_progress));
  state.branchedFrom = frame.branched_from ?? null;
  $("branch").hidden = !state.branchedFrom;
  const edited = state.pendingEdit;
  state.pendingEdit = null;
  if (edited && frame.branched_from) {
    // Our edit made this branch: its turn (the edited message) follows.
    showPendingTurn(edited.requestId, edited.text, null, edited.attachments);
  }
  refreshSessions();
}

function onDelta(frame, kind) {
  const turn = turnFor(frame.turn_id);
  if (kind === "content") {
    appendText(turn, frame.content);
  } else {
    turn.thinking += frame.content;
    turn.thinkingDirty = true;
  }
  scheduleRender(turn);
}

function onUserMessageStored(frame) {
  // Another tab (or client) started a turn here: show its input above the turn's answer,
  // which may already be streaming in.
  if (frame.conversation_id !== state.conversationId) return;
  const turn = state.turn && state.turn.turnId === frame.turn_id ? state.turn : null;
  const nodes = [];
  for (const message of frame.messages ?? []) {
    if (message.role === "user") {
      nodes.push(userBubble(message.content, null, message.attachments));
    } else if (message.role === "assistant") {
      // An assistant message of an MCP prompt: shown as history shows it.
      const view = newTurnView(null);
      view.streaming = false;
      appendText(view, message.content);
      flushRender(view);
      finishTurnView(view, {});
      nodes.push(view.root);
    }
  }
  ui.empty.hidden = true;
  for (const node of nodes) ui.messages.insertBefore(node, turn ? turn.root : null);
  if (!state.turn) turnFor(frame.turn_id); // the turn's answer goes below, Stop is offered
  scrollToEnd(true);
}

// Regenerate: the last answer (everything after the last user message) goes away and a
// new turn answers that message again; a reload shows the same.
function dropLastAnswer() {
  const users = ui.messages.querySelectorAll(".msg.user");
  const last = users[users.length - 1];
  if (!last) return;
  while (last.nextSibling) last.nextSibling.remove();
}

function regenerate() {
  if (state.running || !state.connected) return;
  const requestId = `r${Date.now().toString(36)}-${++state.requestSeq}`;
  // No provider named: the server asks the conversation's chosen one.
  if (!send({ type: "regenerate", request_id: requestId })) return;
  dropLastAnswer();
  state.pending = requestId;
  state.pendingRegenerate = true;
  state.turn = newTurnView(null);
  addMessage(state.turn.root);
  setRunning(true);
}

function onRegenerating(frame) {
  // Another tab regenerates the last answer here.
  if (frame.conversation_id !== state.conversationId) return;
  dropLastAnswer();
  state.turn = null;
  turnFor(frame.turn_id);
}

async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (error) {
    toast("error", "Copy failed", `The browser refused the clipboard: ${error.message}`);
    return;
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function onToolExecution(frame) {
  const turn = turnFor(frame.turn_id);
  let card = turn.tools.get(frame.call_id);
  // The first tool_execution of a call that waited for approval (started: approved;
  // failed: denied, no answer in time, stopped) ends the wait in every tab.
  const approval = state.approvals.get(frame.call_id);
  if (!card) {
    card = toolCard({ name: frame.tool_name, server: frame.server, callId: frame.call_id });
    turn.tools.set(frame.call_id, card);
    flushRender(turn);
    turn.segment = null; // text after this call starts a new paragraph below the card
    if (approval && approval.card.parentNode === turn.parts) approval.card.before(card.root);
    else turn.parts.append(card.root);
  }
  if (approval) approval.end(null);
  if (frame.arguments) card.setArguments(frame.arguments);
  switch (frame.status) {
    case "started": card.setStatus("running"); break;
    case "progress": card.setProgress(frame.progress, frame.total, frame.message); break;
    case "completed": card.setResult(frame.result_preview ?? "", frame.images ?? [], frame.links ?? []); break;
    case "failed": card.setError(frame.error_message ?? "the tool failed"); break;
    default: break;
  }
  scrollToEnd();
}

function onAssistantMessage(frame) {
  let turn = state.turn && (state.turn.turnId === frame.turn_id || state.turn.turnId === null) ? state.turn : null;
  turn = turn ?? turnFor(frame.turn_id);
  if (turn.text === "" && frame.message) appendText(turn, frame.message); // not streamed
  if (turn.thinking === "" && frame.thinking) {
    turn.thinking = frame.thinking;
    turn.thinkingDirty = true;
  }
  turn.streaming = false;
  splitClosingAnswer(turn, frame);
  flushRender(turn);
  if (frame.finish_reason === "error") {
    // The failure is part of the conversation (a reload shows the failed answer too):
    // said where the answer would be, not in a notification.
    const error = state.turnError && (!state.turnError.request_id || state.turnError.request_id === frame.request_id) ? state.turnError : null;
    turn.parts.append(turnErrorView(error));
  }
  state.turnError = null;
  finishTurnView(turn, frame);
  // Questions of the turn that nobody answered here ended with it (answered in another
  // tab, timed out, or cancelled by Stop).
  endQuestions((q) => q.turnId === null || q.turnId === frame.turn_id,
    frame.finish_reason === "cancelled" ? "cancelled (the answer was stopped)" : "no longer waiting");
  endApprovals((a) => a.turnId === null || a.turnId === frame.turn_id,
    frame.finish_reason === "cancelled" ? "cancelled (the answer was stopped)" : "no longer waiting");
  touchExpiry();
  const usedPrompt = state.pendingPrompt && frame.request_id === state.pending;
  state.turn = null;
  state.pending = null;
  state.pendingBubble = null;
  state.pendingPrompt = false;
  state.pendingRegenerate = false;
  setRunning(false);
  if (usedPrompt && state.conversationId) {
    // The prompt's messages were stored before the turn ran but never sent to us: the
    // stored conversation (session_info) shows what the model was really given.
    send({ type: "load_session", conversation_id: state.conversationId });
  } else {
    refreshSessions();
  }
  scrollToEnd();
}

/** An http(s) URL a server asks the user to open, parsed; null for anything else. */
function openableUrl(text) {
  try {
    const url = new URL(text);
    return (url.protocol === "https:" || url.protocol === "http:") && url.host ? url : null;
  } catch {
    return null;
  }
}

/**
 * A URL-mode elicitation: the server wants the user to open a page (sign in, pay…). The
 * card shows the host and the whole URL and asks first; only the user's click on "Open"
 * opens it (in a new tab, no opener) and answers accept. The card then waits for the
 * server's completion (elicitation_complete).
 */
function onUrlElicitation(frame) {
  const url = openableUrl(frame.url ?? "");
  const status = h("div", { class: "inline-status", role: "status" });
  const open = h("button", { class: "btn btn-primary", type: "button", disabled: url ? null : true }, url ? `Open ${url.host}` : "Cannot open this link");
  const decline = h("button", { class: "btn", type: "button" }, "Decline");
  const cancel = h("button", { class: "btn btn-ghost", type: "button" }, "Cancel");
  const actions = h("div", { class: "actions" }, open, decline, cancel);
  const card = h("div", { class: "request-card elicitation url-elicitation", "data-request-id": frame.request_id, "data-state": "waiting" },
    h("div", { class: "request-head" }, h("span", { class: "request-kind" }, "Link"), " from ", h("strong", null, frame.server)),
    h("p", { class: "request-message" }, frame.message),
    h("p", { class: "url-host" }, "Opens a page on ", h("strong", null, url ? url.host : "(not an http(s) link)")),
    h("code", { class: "url-full" }, frame.url ?? ""),
    actions, status);
  const question = {
    card,
    turnId: frame.turn_id ?? null,
    reopen(message) {
      status.className = "inline-status error";
      status.textContent = message;
    },
    end(reason) {
      state.questions.delete(frame.request_id);
      if (card.dataset.answered) return;
      actions.remove();
      card.dataset.state = "ended";
      status.className = "inline-status";
      status.textContent = `Request ended: ${reason}.`;
    },
  };
  state.questions.set(frame.request_id, question);
  const answer = (action) => {
    if (!send({ type: "elicitation_response", request_id: frame.request_id, action })) {
      toast("error", "Not connected", "The answer could not be sent; try again once reconnected.");
      return false;
    }
    actions.remove();
    card.dataset.answered = action;
    card.dataset.state = "answered";
    status.className = "inline-status";
    status.textContent = action === "accept" ? `Opened ${url.host} in a new tab; waiting for it to finish…` : action === "decline" ? "Declined" : "Cancelled";
    if (action === "accept") state.urlCards.set(frame.request_id, { card, status });
    return true;
  };
  open.addEventListener("click", () => {
    if (!url) return;
    if (answer("accept")) window.open(url.href, "_blank", "noopener,noreferrer");
  });
  decline.addEventListener("click", () => answer("decline"));
  cancel.addEventListener("click", () => answer("cancel"));
  placeCard(card, frame.turn_id);
}

/** The server says an accepted URL elicitation is complete: its card closes. */
function onElicitationComplete(frame) {
  const waiting = state.urlCards.get(frame.request_id);
  if (!waiting) return;
  state.urlCards.delete(frame.request_id);
  waiting.card.dataset.state = "completed";
  waiting.status.className = "inline-status";
  waiting.status.textContent = "✓ Completed";
}

function onElicitation(frame) {
  if (state.questions.has(frame.request_id)) return; // already on screen
  if (frame.mode === "url") return onUrlElicitation(frame);
  const id = `elicit-${frame.request_id.replace(/[^\w-]/g, "_")}`;
  const form = schemaForm(frame.requested_schema ?? {}, id);
  const status = h("div", { class: "inline-status", role: "status" });
  const countdown = h("div", { class: "request-timeout muted" });
  const accept = h("button", { class: "btn btn-primary", type: "button" }, "Accept");
  const decline = h("button", { class: "btn", type: "button" }, "Decline");
  const cancel = h("button", { class: "btn btn-ghost", type: "button" }, "Cancel");
  const actions = h("div", { class: "actions" }, accept, decline, cancel);
  const card = h("div", { class: "request-card elicitation", "data-request-id": frame.request_id, "data-state": "waiting" },
    h("div", { class: "request-head" }, h("span", { class: "request-kind" }, "Question"), " from ", h("strong", null, frame.server)),
    h("p", { class: "request-message" }, frame.message),
    form.element, actions, countdown, status);
  const controls = () => form.element.querySelectorAll("input, select, textarea");
  const question = {
    card,
    turnId: frame.turn_id ?? null,
    timer: 0,
    deadline: typeof frame.timeout === "number" && frame.timeout > 0 ? Date.now() + frame.timeout * 1000 : null,
    /** The server refused the answer (INVALID_MESSAGE naming the field): ask again. */
    reopen(message) {
      card.dataset.state = "waiting";
      delete card.dataset.answered;
      for (const control of controls()) control.disabled = false;
      card.insertBefore(actions, countdown);
      status.className = "inline-status error";
      status.textContent = `Not accepted: ${message}`;
      card.querySelector("input:not([type=checkbox]), select")?.focus();
    },
    /** The question ended without (or after) our answer: the form goes away. */
    end(reason) {
      clearInterval(question.timer);
      // The server's clock started a moment before ours: a question that ends this close
      // to its deadline timed out.
      if (reason === "no longer waiting" && question.deadline && Date.now() >= question.deadline - 1000) reason = "no answer in time";
      state.questions.delete(frame.request_id);
      countdown.remove();
      if (card.dataset.answered) return; // our answer went through: keep its status
      actions.remove();
      form.element.remove();
      card.dataset.state = "ended";
      status.className = "inline-status";
      status.textContent = `Question ended: ${reason}.`;
    },
  };
  state.questions.set(frame.request_id, question);
  const answer = (action, content) => {
    const response = { type: "elicitation_response", request_id: frame.request_id, action };
    if (content !== undefined) response.content = content;
    if (!send(response)) return toast("error", "Not connected", "The answer could not be sent; try again once reconnected.");
    actions.remove();
    for (const control of controls()) control.disabled = true;
    status.className = "inline-status";
    status.textContent = action === "accept" ? "✓ Answer sent" : action === "decline" ? "Declined" : "Cancelled";
    card.dataset.answered = action;
    card.dataset.state = "answered";
  };
  accept.addEventListener("click", () => {
    const result = form.read();
    if (result.ok) answer("accept", result.content);
  });
  decline.addEventListener("click", () => answer("decline"));
  cancel.addEventListener("click", () => answer("cancel"));
  if (question.deadline) {
    // The server tells the tool "cancel" when the time is up; the form says so too.
    const tick = () => {
      const left = Math.ceil((question.deadline - Date.now()) / 1000);
      if (left <= 0) return question.end("no answer in time");
      countdown.textContent = card.dataset.answered ? "" : `Waits ${left} s for your answer`;
    };
    tick();
    question.timer = setInterval(tick, 1000);
  }
  placeCard(card, frame.turn_id);
  card.querySelector("input, select")?.focus();
}

/**
 * A question ended on the server (answered here or in another tab, timed out, cancelled):
 * its form goes away with a short note; a card this tab answered keeps its own status.
 */
function onElicitationClosed(frame) {
  const question = state.questions.get(frame.request_id);
  if (!question) return; // already ended here
  // "timed out" says what the card's own countdown says when it runs out first.
  const reason = frame.reason === "timed out" ? "no answer in time"
    : frame.reason ?? (frame.action === "cancel" ? "cancelled" : "answered in another window");
  question.end(reason);
}

/** End every question on screen that `which` selects (see onElicitation's `end`). */
function endQuestions(which, reason) {
  for (const question of [...state.questions.values()]) if (which(question)) question.end(reason);
}

/** The question an error frame is about: the server quotes its request id. */
function questionOfError(frame) {
  if (frame.request_id && state.questions.has(frame.request_id)) return [frame.request_id, state.questions.get(frame.request_id)];
  for (const [requestId, question] of state.questions) {
    if ((frame.error_message ?? "").includes(`'${requestId}'`)) return [requestId, question];
  }
  return null;
}

function onToolApproval(frame) {
  if (state.approvals.has(frame.call_id)) return; // already on screen (sent again on attach)
  const approve = h("button", { class: "btn btn-primary", type: "button" }, "Approve");
  const deny = h("button", { class: "btn btn-danger", type: "button" }, "Deny");
  const actions = h("div", { class: "actions" }, approve, deny);
  const status = h("div", { class: "inline-status", role: "status" });
  const countdown = h("div", { class: "request-timeout muted" });
  const card = h("div", { class: "request-card approval", "data-call-id": frame.call_id, "data-state": "waiting" },
    h("div", { class: "request-head" }, h("span", { class: "request-kind" }, "Approval"), " ",
      h("strong", null, frame.tool_name), " on ", h("strong", null, frame.server), " wants to run"),
    frame.arguments ? h("pre", { class: "json" }, JSON.stringify(frame.arguments, null, 2)) : null,
    actions, countdown, status);
  const approval = {
    card,
    turnId: frame.turn_id ?? null,
    timer: 0,
    deadline: typeof frame.timeout === "number" && frame.timeout > 0 ? Date.now() + frame.timeout * 1000 : null,
    /** The wait is over. `reason` null: the call's tool card (built by onToolExecution
     * in the card's place) says how it went, so the card goes; otherwise it says why. */
    end(reason) {
      clearInterval(approval.timer);
      state.approvals.delete(frame.call_id);
      if (reason === null) return card.remove();
      countdown.remove();
      actions.remove();
      card.dataset.state = "ended";
      status.className = "inline-status";
      status.textContent = `Approval ended: ${reason}.`; // the decision sent (if any) did not count
    },
  };
  state.approvals.set(frame.call_id, approval);
  const decide = (decision) => {
    if (!send({ type: "tool_approval_response", call_id: frame.call_id, decision })) {
      return toast("error", "Not connected", "The decision could not be sent; try again once reconnected.");
    }
    actions.remove();
    countdown.textContent = "";
    status.textContent = decision === "approve" ? "✓ Approved" : "✗ Denied";
    card.dataset.answered = decision;
    card.dataset.state = "answered";
  };
  approve.addEventListener("click", () => decide("approve"));
  deny.addEventListener("click", () => decide("deny"));
  if (approval.deadline) {
    // The server refuses the call when the time is up; the card counts down to it.
    const tick = () => {
      const left = Math.ceil((approval.deadline - Date.now()) / 1000);
      if (left <= 0) return clearInterval(approval.timer); // the server's failed frame ends it
      countdown.textContent = card.dataset.answered ? "" : `Waits ${left} s for your decision`;
    };
    tick();
    approval.timer = setInterval(tick, 1000);
  }
  placeCard(card, frame.turn_id);
}

/** End every approval card on screen that `which` selects (see onToolApproval's `end`). */
function endApprovals(which, reason) {
  for (const approval of [...state.approvals.values()]) if (which(approval)) approval.end(reason);
}

function onSessionCleared(frame) {
  state.chosenProvider = null; // a new conversation starts on the active provider
  setConversation(frame.conversation_id, null, false);
  touchExpiry();
  endQuestions(() => true, "no longer waiting");
  endApprovals(() => true, "no longer waiting");
  state.turn = null;
  renderHistory([]);
  setRunning(false);
  refreshSessions();
  ui.input.focus();
}

function onSessionSaved(frame) {
  if (frame.conversation_id === state.conversationId) {
    state.expiresAt = null; // saved: exempt from retention
    state.expiresAfter = null;
    setConversation(frame.conversation_id, frame.name, true, frame.name);
  }
  toast("success", "Session saved", `Saved as “${frame.name}”.`);
  refreshSessions();
}

// A conversation's title: the model's after the first exchange, or a rename (here or in
// another tab); a saved session's name is its title.
// `saved`: saved under that name (by this tab or another one, on any replica).
function onSessionTitle(frame) {
  if (frame.conversation_id === state.conversationId) {
    if (frame.saved) {
      state.expiresAt = null; // saved: exempt from retention
      state.expiresAfter = null;
    }
    const saved = state.saved || frame.saved === true;
    setConversation(state.conversationId, saved ? frame.title : state.name, saved, frame.title);
  }
  const entry = state.sessions.find((s) => s.conversation_id === frame.conversation_id);
  if (entry) {
    entry.title = frame.title;
    if (frame.saved) entry.saved = true;
    if (entry.saved) entry.name = frame.title;
    renderSessions();
  }
}

// Export: the server writes the file (Markdown to read, JSON to import again); the page
// hands it to the browser as a download. Import: a JSON export becomes a new conversation.
function onSessionExport(frame) {
  const type = frame.format === "json" ? "application/json" : "text/markdown";
  const url = URL.createObjectURL(new Blob([frame.content], { type }));
  const link = h("a", { href: url, download: frame.filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

function onSessionImported(frame) {
  toast("success", "Conversation imported", `“${frame.title || "Untitled"}”, ${frame.message_count} message${frame.message_count === 1 ? "" : "s"}.`);
  send({ type: "load_session", conversation_id: frame.conversation_id });
}

async function exportDialog() {
  const result = await openDialog({
    title: "Export this conversation",
    body: h("p", null, "Markdown is for reading; JSON keeps everything and can be imported again."),
    actions: [{ label: "Cancel", value: null }, { label: "JSON", value: "json" }, { label: "Markdown", value: "markdown", primary: true }],
  });
  if (result) send({ type: "export_session", format: result });
}

async function importFile(file) {
  let conversation;
  try {
    conversation = JSON.parse(await file.text());
  } catch (error) {
    toast("error", "Import failed", `${file.name} is not JSON: ${error.message}`);
    return;
  }
  if (conversation === null || typeof conversation !== "object" || Array.isArray(conversation)) {
    toast("error", "Import failed", `${file.name} is not a conversation export (a JSON object).`);
    return;
  }
  send({ type: "import_session", conversation });
}

async function renameDialog(conversationId, current) {
  const input = h("input", { id: "rename-title", type: "text", maxlength: "200", required: true, placeholder: "e.g. Trip plans" });
  input.value = current ?? "";
  const body = h("div", { class: "field" }, h("label", { for: "rename-title" }, "Title"), input);
  const result = await openDialog({
    title: "Rename this conversation",
    body,
    actions: [{ label: "Cancel", value: null }, { label: "Rename", value: "rename", primary: true, validate: () => input.reportValidity() && input.value.trim() !== "" }],
    focus: input,
  });
  if (result === "rename") send({ type: "rename_session", conversation_id: conversationId, title: input.value.trim() });
}

// The list comes in pages (list_sessions: limit, cursor → sessions: next_cursor), the most
// recently updated first. A refresh asks again from the start for as many as are shown
// (up to the protocol's 500), so the conversations loaded with "Load more" stay listed;
// when all were shown, for a page more, so conversations created meanwhile (here or in
// another tab) do not push the oldest out of the list. "Load more" asks for the page
// after the last one received and appends it.
const SESSIONS_PAGE = 100;
const SESSIONS_PAGE_MAX = 500;

function refreshSessions() {
  const shown = state.sessions.length;
  const wanted = state.sessionsCursor ? shown : shown + SESSIONS_PAGE;
  send({ type: "list_sessions", limit: Math.min(SESSIONS_PAGE_MAX, Math.max(SESSIONS_PAGE, wanted)) });
}

function loadMoreSessions() {
  if (!state.sessionsCursor || state.loadingMore) return;
  state.loadingMore = true;
  send({ type: "list_sessions", limit: SESSIONS_PAGE, cursor: state.sessionsCursor });
  renderSessions();
}

function onSessions(frame) {
  const sessions = frame.sessions ?? [];
  if (frame.cursor) {
    // A further page: it belongs after the list only if it follows the page we hold (a
    // refresh that arrived meanwhile started the list over: this page is stale).
    if (frame.cursor !== state.sessionsCursor) return;
    const known = new Set(state.sessions.map((s) => s.conversation_id));
    state.sessions = state.sessions.concat(sessions.filter((s) => !known.has(s.conversation_id)));
  } else {
    state.sessions = sessions;
  }
  state.loadingMore = false;
  state.sessionsCursor = frame.next_cursor ?? null;
  renderSessions();
}

function onSessionDeleted(frame) {
  state.sessions = state.sessions.filter((s) => s.conversation_id !== frame.conversation_id);
  renderSessions();
  toast("info", "Session deleted", null);
  refreshSessions();
}

function onServerStatus(frame) {
  const previous = state.servers.get(frame.server);
  // Kept in session_info's shape ({name, status, error_message, auth_url}).
  state.servers.set(frame.server, { name: frame.server, status: frame.status, error_message: frame.error_message ?? null, auth_url: frame.auth_url ?? null, icons: frame.icons?.length ? frame.icons : previous?.icons ?? [], completions: Boolean(frame.completions) });
  renderHeader();
  if (frame.status === "unavailable" && previous?.status !== "unavailable") {
    toast("warning", `MCP server “${frame.server}” unavailable`, frame.error_message ?? ERROR_TEXTS.MCP_SERVER_UNAVAILABLE);
  } else if (frame.status === "auth_required" && previous?.auth_url !== frame.auth_url) {
    toast("warning", `MCP server “${frame.server}” needs you to sign in`, `${frame.error_message ? `${frame.error_message}. ` : ""}Use Connect beside it.`);
  } else if (frame.status === "ready" && previous?.status === "auth_required") {
    toast("success", `MCP server “${frame.server}” connected`, null);
  }
}

function onToolsChanged(frame) {
  // A server connected (after Connect, for instance) or went away: the lists are whole.
  state.tools = frame.tools ?? [];
  state.prompts = frame.prompts ?? [];
  renderTools();
  renderPrompts();
}

function onResourcesChanged(frame) {
  // A server's resources or templates changed (its list_changed, or it connected or went
  // away): the lists are whole. The entries marked as updated stay marked.
  const updated = [...ui.resources.querySelectorAll(".resource-item[data-updated]")].map((item) => [item.dataset.server, item.dataset.uri]);
  state.resources = frame.resources ?? [];
  state.templates = frame.resource_templates ?? [];
  renderResourcePanel();
  for (const [server, uri] of updated) markUpdated(ui.resources, server, uri);
}

/** An authorization URL the page may open: http(s) only (never javascript: or data:). */
function safeAuthUrl(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
}

// Several replicas: this one lost (or got back) the broker that brings the other replicas'
// live events. Once it is back, a session_info follows (the conversation as stored), unless
// this tab already shows the conversation's running turn.
function onBrokerStatus(frame) {
  toast(frame.connected ? "info" : "warning", frame.connected ? "Live updates are back" : "Live updates interrupted", frame.message);
}

function onError(frame) {
  const code = frame.error_code;
  if (frame.request_id) state.reads.delete(frame.request_id);
  if (frame.request_id && state.completions.delete(frame.request_id)) return; // a suggestion failed: nothing to tell
  if (code === "INVALID_MESSAGE" && frame.call_id) {
    // A refused decision ("no tool call … is waiting for approval"): answered in another
    // tab, or timed out, just before ours. The call's tool card shows how it went.
    state.approvals.get(frame.call_id)?.end("no longer waiting");
    return;
  }
  const asked = code === "INVALID_MESSAGE" ? questionOfError(frame) : null;
  if (asked) {
    const [requestId, question] = asked;
    // "no elicitation request … is waiting": it timed out or was answered elsewhere.
    if (/is waiting for an answer/.test(frame.error_message)) return question.end("no longer waiting");
    const detail = frame.error_message.replace(`elicitation '${requestId}': `, "");
    return question.reopen(detail);
  }
  const text = errorText(frame);
  // A running turn's failure (its assistant_message follows): shown inline in the turn.
  const turnStarted = state.turn && state.turn.turnId !== null;
  const waiting = frame.request_id && frame.request_id === state.pending;
  if (!REFUSED_CODES.has(code) && (turnStarted || (waiting && TURN_CODES.has(code)))) {
    state.turnError = { ...frame, title: ERROR_TITLES[code] ?? "Error", text };
    return;
  }
  toast("error", ERROR_TITLES[code] ?? "Error", text, code);
  // A message refused before its turn started gets no assistant_message: end the wait.
  // MESSAGE_TOO_LARGE (and JSON the server could not read) come without a request id.
  const ours = frame.request_id ? frame.request_id === state.pending : REFUSED_CODES.has(code) && state.pending !== null;
  if (ours && !turnStarted) {
    state.turn?.root.remove();
    // A refused regenerate: the answer it took off the screen is still stored.
    if (state.pendingRegenerate && state.conversationId) send({ type: "load_session", conversation_id: state.conversationId });
    state.pendingRegenerate = false;
    state.pendingEdit = null;
    // Refused before it was stored (TURN_IN_PROGRESS, INVALID_MESSAGE, STORAGE_FULL…): the
    // message is not in the conversation, so it leaves the view and goes back to the input.
    if (REFUSED_CODES.has(code) && state.pendingBubble) {
      state.pendingBubble.remove();
      if (!ui.input.value) ui.input.value = state.pendingBubble.dataset.text ?? "";
      if (!state.attachments.length) state.attachments = state.pendingAttachments;
      renderAttachments();
    }
    state.pendingAttachments = [];
    state.pendingBubble = null;
    state.turn = null;
    state.pending = null;
    setRunning(false);
  }
}

// The hop limit's closing answer is stored as an answer of its own, after the one that
// asked for more tools: a reload shows their texts as two paragraphs, and so does the live
// view once the turn ends (its deltas arrived as one stream; the closing answer is the
// tail, as assistant_message names it).
function splitClosingAnswer(turn, frame) {
  const segment = turn.segment;
  const closing = frame.message;
  if (frame.finish_reason !== "tool_hops_exceeded" || !closing || !segment) return;
  if (segment.text.length <= closing.length || !segment.text.endsWith(closing)) return;
  segment.text = segment.text.slice(0, -closing.length);
  segment.dirty = true;
  flushRender(turn);
  turn.segment = { el: h("div", { class: "md" }), text: closing, dirty: true };
  turn.parts.append(turn.segment.el);
}

// What an error frame says, once: the product's wording for a code, else the server's.
function errorText(frame) {
  const code = frame.error_code;
  if (code === "MCP_SERVER_UNAVAILABLE" && frame.error_message) return `${ERROR_TEXTS[code]} (${frame.error_message})`;
  if (code === "LLM_NOT_CONFIGURED") {
    // The server's message names the variable and where it may be set; only the step
    // after that is added.
    return `${frame.error_message}. Then restart the platform and send the message again.`.replace(/\.\. Then/, ". Then");
  }
  return ERROR_TEXTS[code] ?? frame.error_message;
}

// A failed answer's stored error (error_code, error_message), as the live error frame
// gave them: shown the same way after a reload. null when the row has none (stored by an
// older version, or the platform stopped mid-answer).
function storedError(message) {
  if (!message.error_code) return null;
  const frame = { error_code: message.error_code, error_message: message.error_message ?? "" };
  return { ...frame, title: ERROR_TITLES[frame.error_code] ?? "Error", text: errorText(frame) };
}

// A failed answer's inline notice: the error as it came (live) or as it was stored (a
// reload), or only the fact that it failed when no error was stored.
function turnErrorView(error) {
  return h("div", { class: "turn-error", role: "alert", "data-code": error?.error_code ?? null },
    h("div", { class: "turn-error-title" }, error ? `The answer failed: ${error.title}` : "The answer failed"),
    error?.text ? h("div", { class: "turn-error-text" }, error.text) : null);
}

// -- the conversation view ---------------------------------------------------------------

function setConversation(conversationId, name, saved, title = null) {
  state.conversationId = conversationId;
  state.name = name;
  state.saved = saved;
  state.title = title ?? name;
  sessionStorage.setItem(STORAGE_KEY, conversationId);
  ui.title.textContent = state.title || "New conversation";
  // The whole title as a tooltip: a narrow header shows as much of it as fits.
  ui.title.title = state.title || "New conversation";
  ui.title.dataset.conversationId = conversationId;
  renderPicker();
  renderExpiry();
  renderSessions();
}

function userBubble(text, prompt, attachments) {
  const bubble = h("div", { class: "msg user" });
  if (prompt) bubble.append(h("div", { class: "prompt-chip" }, `Prompt · ${prompt.server}/${prompt.name}`));
  if (attachments?.length) bubble.append(sentAttachments(attachments));
  if (text) {
    bubble.append(h("div", { class: "user-text" }, text));
    // Its label comes from the stylesheet, so the bubble's text stays the message's.
    const edit = h("button", { class: "msg-action edit-btn", type: "button", "aria-label": "Edit", title: "Edit this message: a new conversation branches from here" });
    edit.addEventListener("click", () => editMessage(bubble, text, attachments ?? []));
    bubble.append(h("div", { class: "user-actions" }, edit));
  }
  return bubble;
}

// Edit a sent message: the conversation up to it is copied into a new one (a branch; the
// original stays as it was) and the edited text is sent there, with the message's files
// (the server takes them from the stored message; the new bubble shows them at once).
async function editMessage(bubble, text, attachments) {
  if (state.running || !state.connected) return;
  const userIndex = [...ui.messages.querySelectorAll(".msg.user")].indexOf(bubble);
  const input = h("textarea", { id: "edit-text", rows: "4", required: true });
  input.value = text;
  const body = h("div", { class: "field" }, h("label", { for: "edit-text" }, "Message"), input,
    h("p", { class: "muted" }, "The conversation continues in a new branch from this message; this one stays as it is."),
    attachments.length ? h("p", { class: "muted" }, `Its files go with it: ${attachments.map((a) => a.name).join(", ")}.`) : null);
  const result = await openDialog({
    title: "Edit and branch",
    body,
    actions: [{ label: "Cancel", value: null }, { label: "Send in a new branch", value: "send", primary: true, validate: () => input.value.trim() !== "" }],
    focus: input,
  });
  if (result !== "send" || userIndex < 0 || state.running) return;
  const requestId = `r${Date.now().toString(36)}-${++state.requestSeq}`;
  const message = input.value;
  // The branch keeps the conversation's chosen provider (the server copies it).
  if (!send({ type: "edit_message", user_index: userIndex, original: text, message, request_id: requestId })) return;
  state.pendingEdit = { requestId, text: message, attachments };
  state.pending = requestId;
  setRunning(true);
}

function showPendingTurn(requestId, text, prompt, attachments) {
  state.pending = requestId;
  state.pendingPrompt = Boolean(prompt);
  state.pendingBubble = userBubble(text, prompt, attachments);
  state.pendingBubble.dataset.text = text;
  addMessage(state.pendingBubble);
  state.turn = newTurnView(null);
  addMessage(state.turn.root);
  setRunning(true);
}

function newTurnView(turnId) {
  const thinkingBody = h("div", { class: "thinking-body" });
  const thinkingLabel = h("span", null, "Thinking…");
  const thinking = h("details", { class: "thinking", hidden: true }, h("summary", null, thinkingLabel), thinkingBody);
  const parts = h("div", { class: "parts" });
  const meta = h("div", { class: "meta" });
  const typing = h("div", { class: "typing", "aria-label": "The model is answering" }, h("span"), h("span"), h("span"));
  const root = h("div", { class: "msg assistant", "data-turn-id": turnId ?? "" }, thinking, parts, typing, meta);
  return {
    turnId, root, parts, meta, typing, thinkingEl: thinking, thinkingBody, thinkingLabel,
    text: "", thinking: "", thinkingDirty: false,
    segment: null, tools: new Map(), frame: null, streaming: true,
  };
}

function turnFor(turnId) {
  let turn = state.turn;
  if (turn && turn.turnId === null && state.pending !== null) {
    turn.turnId = turnId; // the first frame of the turn we started
    turn.root.dataset.turnId = turnId;
  }
  if (!turn || turn.turnId !== turnId) {
    turn = newTurnView(turnId);
    state.turn = turn;
    addMessage(turn.root);
    if (!state.running) setRunning(true);
  }
  return turn;
}

function appendText(turn, text) {
  if (!turn.segment) {
    turn.segment = { el: h("div", { class: "md" }), text: "" };
    turn.parts.append(turn.segment.el);
  }
  turn.segment.text += text;
  turn.segment.dirty = true;
  turn.text += text;
}

function scheduleRender(turn) {
  if (turn.frame) return;
  // Once per animation frame; when a render gets expensive (a long answer: ~12 ms for
  // 20 KB here), at most a fifth of the time goes to rendering, so typing and scrolling
  // stay smooth while the stream goes on.
  const cost = turn.renderMs ?? 0;
  const pending = { timer: 0, frame: 0 };
  const render = () => {
    pending.frame = requestAnimationFrame(() => flushRender(turn));
  };
  if (cost > 4) pending.timer = setTimeout(render, cost * 4);
  else render();
  turn.frame = pending;
}

function flushRender(turn) {
  if (turn.frame) {
    clearTimeout(turn.frame.timer);
    cancelAnimationFrame(turn.frame.frame);
  }
  turn.frame = null;
  if (turn.segment?.dirty) {
    const started = performance.now();
    turn.segment.el.replaceChildren(renderMarkdown(turn.segment.text));
    turn.segment.dirty = false;
    turn.renderMs = performance.now() - started;
  }
  if (turn.thinkingDirty) {
    turn.thinkingEl.hidden = false;
    turn.thinkingBody.replaceChildren(renderMarkdown(turn.thinking));
    turn.thinkingDirty = false;
  }
  turn.thinkingLabel.textContent = turn.streaming && turn.text === "" ? "Thinking…" : "Thinking";
  if (turn.text !== "" || turn.tools.size > 0) turn.typing.hidden = true;
  scrollToEnd();
}

function finishTurnView(turn, frame) {
  turn.typing.remove();
  turn.root.classList.add("done");
  const pieces = [];
  if (frame.model) pieces.push(h("span", { class: "meta-model" }, frame.model));
  const usage = frame.usage;
  if (usage && usage.total_tokens) {
    // The server sums usage over the turn's LLM calls (one per tool round).
    pieces.push(h("span", { class: "meta-usage", title: `Tokens of this turn, summed over its LLM calls (one per tool round): ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion` },
      `${usage.total_tokens.toLocaleString()} tokens (${usage.prompt_tokens.toLocaleString()} in · ${usage.completion_tokens.toLocaleString()} out)`));
    if (usage.cost) pieces.push(h("span", null, `$${usage.cost.toFixed(5)}`));
  }
  const reason = frame.finish_reason ?? frame.status;
  const labels = { cancelled: "stopped", length: "cut off (length)", tool_hops_exceeded: "too many tool rounds", error: "error", incomplete: "incomplete" };
  if (labels[reason]) pieces.push(h("span", { class: `badge badge-${reason}` }, labels[reason]));
  const copy = h("button", { class: "msg-action copy-btn", type: "button", title: "Copy the answer (Markdown)" }, "Copy");
  copy.addEventListener("click", () => copyText(copy, turn.text));
  const again = h("button", { class: "msg-action regenerate-btn", type: "button", title: "Answer the last message again (this answer is replaced)" }, "Regenerate");
  again.addEventListener("click", regenerate);
  pieces.push(h("span", { class: "msg-actions" }, copy, again));
  turn.meta.replaceChildren(...pieces);
}

function addMessage(node) {
  ui.empty.hidden = true;
  ui.messages.append(node);
  scrollToEnd(true);
}

// A question's or an approval's card: in its turn's flow when it names one, else inline.
function placeCard(card, turnId) {
  if (!turnId) return placeInline(card);
  const turn = turnFor(turnId);
  flushRender(turn);
  turn.segment = null;
  turn.parts.append(card);
  scrollToEnd(true);
}

function placeInline(card) {
  if (state.turn) {
    flushRender(state.turn);
    state.turn.segment = null;
    state.turn.parts.append(card);
  } else {
    addMessage(card);
  }
  scrollToEnd(true);
}

function renderHistory(messages) {
  for (const node of [...ui.messages.children]) if (node !== ui.empty) node.remove();
  let turn = null;
  const toolByCall = new Map();
  const toolServers = new Map(state.tools.map((t) => [t.name, t.server]));
  // Stored calls carry the model-facing name ("demo__add"); live cards show the server's
  // own tool name and the server, so the same is derived here from session_info.tools.
  const displayTool = (modelName) => {
    const server = toolServers.get(modelName);
    if (server === undefined) return { name: modelName, server: "" }; // server gone: cannot tell
    const prefix = modelName.slice(server.length, server.length + 2) === "__";
    // Without the "<server>__" prefix (a hashed, shortened name) the model's name is all we have.
    return { name: prefix ? modelName.slice(server.length + 2) : modelName, server };
  };
  const closeTurn = () => {
    if (!turn) return;
    turn.streaming = false;
    flushRender(turn);
    if (turn.last?.failed) turn.parts.append(turnErrorView(storedError(turn.last)));
    finishTurnView(turn, turn.last ?? {});
    turn = null;
  };
  for (const message of messages) {
    if (message.role === "user") {
      closeTurn();
      ui.messages.append(userBubble(message.content, null, message.attachments));
    } else if (message.role === "assistant") {
      if (!turn) {
        turn = newTurnView(null);
        ui.messages.append(turn.root);
      }
      if (message.thinking) {
        turn.thinking += (turn.thinking ? "\n\n" : "") + message.thinking;
        turn.thinkingDirty = true;
      }
      if (message.content) {
        turn.segment = null;
        appendText(turn, message.content);
        flushRender(turn);
      }
      for (const call of message.tool_calls ?? []) {
        const card = toolCard({ ...displayTool(call.name), callId: call.id });
        card.setArguments(parseJson(call.arguments));
        // Until its stored result says otherwise: a call can end with none (the platform
        // was stopped mid-call).
        card.setStatus("no-result");
        toolByCall.set(call.id, card);
        turn.tools.set(call.id, card);
        turn.segment = null;
        turn.parts.append(card.root);
      }
      // One stored row per LLM call; the turn's usage (as assistant_message gave it) is their sum.
      const usage = sumUsage(turn.last?.usage, message.usage);
      turn.last = { ...message, usage, finish_reason: message.status === "complete" ? message.finish_reason : message.status,
        failed: message.status === "error" || message.finish_reason === "error" };
    } else if (message.role === "tool") {
      const card = toolByCall.get(message.tool_call_id);
      // The stored status says how the call ended: failed or stopped, as its live
      // tool_execution "failed" frame said (the text tells which).
      if (card && (message.status === "error" || message.status === "cancelled")) {
        card.setError(message.content.replace(/^Error: /, ""));
      } else if (card) {
        card.setResult(message.content, []);
      }
    }
  }
  closeTurn();
  ui.empty.hidden = messages.length > 0;
  scrollToEnd(true);
}

function sumUsage(a, b) {
  if (!a) return b ?? null;
  if (!b) return a;
  const sum = {
    prompt_tokens: (a.prompt_tokens ?? 0) + (b.prompt_tokens ?? 0),
    completion_tokens: (a.completion_tokens ?? 0) + (b.completion_tokens ?? 0),
    total_tokens: (a.total_tokens ?? 0) + (b.total_tokens ?? 0),
  };
  if (a.cost != null || b.cost != null) sum.cost = (a.cost ?? 0) + (b.cost ?? 0);
  return sum;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toolCard({ name, server, callId }) {
  const status = h("span", { class: "tool-status" }, "running…");
  const args = h("pre", { class: "json" });
  const argsBlock = h("details", { class: "tool-args", hidden: true }, h("summary", null, "Arguments"), args);
  const bar = h("progress", { max: "1" });
  const progressText = h("span", { class: "progress-text" });
  const progress = h("div", { class: "tool-progress", hidden: true }, bar, progressText);
  const result = h("div", { class: "tool-result", hidden: true });
  const info = state.tools.find((t) => t.server === server && (t.tool ?? t.name) === name);
  const root = h("div", { class: "tool-card", "data-call-id": callId, "data-status": "running", "data-tool": name },
    h("div", { class: "tool-head" },
      iconImg(info?.icons) ?? h("span", { class: "tool-icon", "aria-hidden": "true" }, "fn"),
      h("span", { class: "tool-name" }, name),
      server ? h("span", { class: "tool-server" }, server) : null,
      hintBadges(info?.annotations),
      status),
    argsBlock, progress, result);
  return {
    root,
    setStatus(value) {
      root.dataset.status = value;
      status.textContent = {
        running: "running…", done: "done", failed: "failed", "no-result": "no result",
      }[value] ?? value;
    },
    setArguments(value) {
      args.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
      argsBlock.hidden = false;
    },
    setProgress(value, total, message) {
      progress.hidden = false;
      if (typeof total === "number" && total > 0) {
        bar.max = total;
        bar.value = Math.min(value ?? 0, total);
      } else {
        bar.removeAttribute("value"); // indeterminate
      }
      const counts = typeof total === "number" ? `${value} / ${total}` : `${value ?? ""}`;
      progressText.textContent = message || counts;
    },
    setResult(text, images, links = []) {
      this.setStatus("done");
      if (!progress.hidden && bar.max) bar.value = bar.max;
      result.hidden = false;
      const shown = text.length > RESULT_PREVIEW_CHARS ? `${text.slice(0, RESULT_PREVIEW_CHARS)}…` : text;
      const children = [];
      if (shown) children.push(h("div", { class: "result-label" }, "Result"), h("pre", { class: "result-text" }, shown));
      for (const image of images) {
        if (!/^image\/(png|jpeg|gif|webp)$/.test(image.mime_type) || !/^[A-Za-z0-9+/=\s]+$/.test(image.data)) continue;
        const img = h("img", { class: "tool-image", alt: `image returned by ${name}`, src: `data:${image.mime_type};base64,${image.data.replace(/\s/g, "")}` });
        children.push(img);
      }
      if (links.length) {
        children.push(h("div", { class: "result-label" }, "Resource links"));
        const list = h("ul", { class: "resource-links" });
        for (const link of links) list.append(resourceLinkItem(link));
        children.push(list);
      }
      result.replaceChildren(...children);
    },
    setError(message) {
      this.setStatus("failed");
      result.hidden = false;
      result.replaceChildren(h("div", { class: "result-label" }, "Error"), h("pre", { class: "tool-error" }, message));
    },
  };
}

/**
 * One resource link of a tool result: a button that reads it through the platform
 * (read_resource frame). The browser never fetches the URI itself.
 */
function resourceLinkItem(link) {
  const open = h("button", { type: "button", class: "link-btn", "data-uri": link.uri, title: link.uri }, link.title || link.name);
  open.addEventListener("click", () => readResource(link.server, link.uri));
  return h("li", { class: "resource-link" }, open,
    link.mime_type ? h("span", { class: "muted" }, ` ${link.mime_type}`) : null,
    link.description ? h("div", { class: "help" }, link.description) : null);
}

function readResource(server, uri) {
  const requestId = `res-${++state.requestSeq}`;
  state.reads.set(requestId, uri);
  if (!send({ type: "read_resource", request_id: requestId, server, uri })) {
    state.reads.delete(requestId);
    toast("error", "Not connected", "The resource could not be read; try again once reconnected.");
  }
}

function onResourceContent(frame) {
  if (!state.reads.delete(frame.request_id)) return; // asked by another page
  if (!frame.is_error) {
    for (const item of ui.resources.querySelectorAll(".resource-item[data-updated]")) {
      if (item.dataset.server === frame.server && item.dataset.uri === frame.uri) delete item.dataset.updated;
    }
  }
  // Images: raster types only, as data: URLs of the base64 the platform sent (never a URL).
  const images = (frame.images ?? [])
    .filter((image) => /^image\/(png|jpeg|gif|webp)$/.test(image.mime_type) && /^[A-Za-z0-9+/=\s]+$/.test(image.data))
    .map((image) => h("img", { class: "resource-image", alt: `image of ${frame.uri}`, src: `data:${image.mime_type};base64,${image.data.replace(/\s/g, "")}` }));
  const body = h("div", { class: "resource-view" },
    h("p", { class: "muted" }, `${frame.server} · ${frame.uri}${frame.mime_type ? ` · ${frame.mime_type}` : ""}`),
    ...images,
    // An image's text is only its description: the image says it better.
    images.length && !frame.is_error ? null : h("pre", { class: frame.is_error ? "tool-error" : "result-text" }, frame.text),
    frame.truncated ? h("p", { class: "muted" }, "(cut: the resource is longer)") : null);
  openDialog({ title: "Resource", body, actions: [{ label: "Close", value: null, primary: true }] });
}

/** A resource this conversation read changed on its server (only its tabs are told). */
function onResourceUpdated(frame) {
  markUpdated(ui.resources, frame.server, frame.uri);
  toast("info", "Resource updated", `${frame.uri} (${frame.server}) changed since it was read; the model is told on its next turn.`);
}

function renderResourcePanel() {
  renderResources({ list: ui.resources, count: ui.resourceCount }, { resources: state.resources, templates: state.templates }, {
    onRead: (resource) => { closeSidebar(); readResource(resource.server, resource.uri); },
    onTemplate: (template) => openTemplate(template),
  });
}

function scrollToEnd(force = false) {
  const box = ui.messages;
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 160;
  if (force || nearEnd) box.scrollTop = box.scrollHeight;
}

// -- header, sidebar ----------------------------------------------------------------------

// The model picker: the configured providers (each with its model). The choice is the
// conversation's, stored by the server (set_provider; every tab of the conversation is told
// with provider_set, a reload gets it in session_info) and applies to its next message (or
// regenerate, edit). Each answer still says under it which model wrote it.
function renderPicker() {
  const picker = $("provider-picker");
  const chosen = state.chosenProvider;
  const known = state.providers.some((p) => p.name === chosen);
  const current = known ? chosen : state.activeProvider;
  picker.replaceChildren(...state.providers.map((p) =>
    h("option", { value: p.name, selected: p.name === current ? "" : null },
      `${p.model} · ${p.name}${p.name === state.activeProvider ? " (default)" : ""}`)));
  picker.value = current ?? "";
  picker.closest(".picker").hidden = state.providers.length < 2;
}

function onProviderSet(frame) {
  if (frame.conversation_id !== state.conversationId) return;
  state.chosenProvider = frame.provider ?? null;
  renderPicker();
}

function renderHeader() {
  ui.model.textContent = state.model;
  renderExpiry();
  const badges = [...state.servers.values()].map((s) => {
    // OAuth: "Connect" opens the authorization server's page in a new tab; it comes back
    // to /oauth/callback, which closes itself, and a server_status "ready" follows.
    const authUrl = s.status === "auth_required" ? safeAuthUrl(s.auth_url) : null;
    return h("span", { class: `server-badge status-${s.status}`, title: s.error_message ? `${s.name}: ${s.status} — ${s.error_message}` : `${s.name}: ${s.status}`, "data-server": s.name },
      h("span", { class: "dot", "aria-hidden": "true" }), iconImg(s.icons), s.name, h("span", { class: "sr-only" }, ` (${s.status})`),
      authUrl ? h("a", { class: "connect-btn", href: authUrl, target: "_blank", rel: "noopener", "data-connect": s.name, title: `Sign in to ${s.name}` }, "Connect") : null);
  });
  ui.servers.replaceChildren(...badges);
}

// An unsaved conversation says when retention will remove it (the server's expires_at,
// moved on by each change here); a saved one says nothing (it is kept).
function touchExpiry() {
  if (state.expiresAfter !== null) state.expiresAt = Date.now() / 1000 + state.expiresAfter;
  renderExpiry();
}

function renderExpiry() {
  const at = state.saved ? null : state.expiresAt;
  ui.expiry.hidden = at === null;
  if (at === null) {
    ui.expiry.textContent = "";
    delete ui.expiry.dataset.expiresAt;
    return;
  }
  const when = new Date(at * 1000).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
  const hours = Math.round((state.expiresAfter ?? 0) / 3600);
  const span = hours >= 48 ? `${Math.round(hours / 24)} days` : `${hours} hours`;
  ui.expiry.textContent = `Unsaved · kept until ${when}`;
  ui.expiry.title = `Unsaved conversations are removed ${span} after their last message; Save keeps this one.`;
  ui.expiry.dataset.expiresAt = String(at);
}

/** A tool's annotations as small badges (hints from its server, not guarantees). */
function hintBadges(annotations) {
  if (!annotations) return null;
  const badges = [];
  if (annotations.read_only) badges.push(["read-only", "hint-read-only", "Does not change anything (says its server)"]);
  else if (annotations.destructive === true) badges.push(["destructive", "hint-destructive", "May delete or overwrite (says its server)"]);
  if (annotations.open_world) badges.push(["open-world", "hint-open-world", "Reaches outside systems (says its server)"]);
  if (!badges.length) return null;
  return h("span", { class: "tool-hints" }, ...badges.map(([text, cls, title]) => h("span", { class: `hint ${cls}`, title }, text)));
}

function renderTools() {
  ui.toolCount.textContent = String(state.tools.length);
  const items = state.tools.map((t) =>
    h("li", { class: "cap", title: t.description ?? "", "data-tool": t.name }, iconImg(t.icons), h("span", { class: "cap-name" }, t.name), h("span", { class: "cap-server" }, t.server),
      hintBadges(t.annotations),
      t.description ? h("span", { class: "cap-desc" }, t.description) : null));
  ui.tools.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "No tools offered.")]));
}

function renderPrompts() {
  ui.promptCount.textContent = String(state.prompts.length);
  const items = state.prompts.map((p) => {
    const button = h("button", { class: "cap cap-button", type: "button", title: p.description ?? "" },
      iconImg(p.icons), h("span", { class: "cap-name" }, p.name), h("span", { class: "cap-server" }, p.server),
      p.description ? h("span", { class: "cap-desc" }, p.description) : null);
    button.addEventListener("click", () => openPrompt(p));
    return h("li", null, button);
  });
  ui.prompts.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "No prompts offered.")]));
}

// Search: while the box has text, the list shows the matching conversations (one each,
// with the text around the match) instead of the sessions; clearing it shows them again.
function searchQuery() {
  return $("session-search").value.trim();
}

function onSearchInput() {
  clearTimeout(onSearchInput.timer);
  onSearchInput.timer = setTimeout(() => {
    const query = searchQuery();
    if (!/[\p{L}\p{N}]/u.test(query)) {
      state.search = null;
      renderSessions();
      return;
    }
    send({ type: "search_sessions", query });
  }, 200);
}

function onSearchResults(frame) {
  if (frame.query !== searchQuery()) return; // an older query's answer
  state.search = frame;
  renderSessions();
}

function renderSearch() {
  const items = state.search.hits.map((hit) => {
    const label = hit.title || "Untitled conversation";
    const open = h("button", { class: "session-open", type: "button", title: hit.conversation_id },
      h("span", { class: "session-name" }, hit.saved ? "★ " : "", label),
      h("span", { class: "session-snippet" }, hit.message_id ? `${hit.role === "user" ? "You" : "Assistant"}: ${hit.snippet}` : "Title"));
    open.addEventListener("click", () => {
      closeSidebar();
      if (hit.conversation_id !== state.conversationId) send({ type: "load_session", conversation_id: hit.conversation_id });
    });
    return h("li", { class: "session search-hit", "data-conversation-id": hit.conversation_id }, open);
  });
  if (!items.length) items.push(h("li", { class: "muted" }, `Nothing matches “${state.search.query}”.`));
  ui.sessions.replaceChildren(...items);
}

function renderSessions() {
  if (state.search && searchQuery()) return renderSearch();
  const items = state.sessions.map((s) => {
    const current = s.conversation_id === state.conversationId;
    const label = s.title || s.name || (current ? "Current conversation" : "Unsaved conversation");
    const open = h("button", { class: "session-open", type: "button", title: s.conversation_id },
      h("span", { class: "session-name" }, s.saved ? "★ " : "", label),
      h("span", { class: "session-meta" }, `${s.message_count} message${s.message_count === 1 ? "" : "s"} · ${relativeTime(s.updated_at)}`));
    open.addEventListener("click", () => {
      closeSidebar();
      if (!current) send({ type: "load_session", conversation_id: s.conversation_id });
    });
    const rename = h("button", { class: "icon-btn session-rename", type: "button", "aria-label": `Rename ${label}`, title: "Rename" }, "✎");
    rename.addEventListener("click", () => renameDialog(s.conversation_id, s.title || s.name));
    const remove = h("button", { class: "icon-btn session-delete", type: "button", "aria-label": `Delete ${label}`, title: "Delete" }, "×");
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog("Delete this session?", `“${label}” and its messages are deleted for good.`, "Delete", true);
      if (ok) send({ type: "delete_session", conversation_id: s.conversation_id });
    });
    return h("li", { class: `session${current ? " current" : ""}`, "data-conversation-id": s.conversation_id, "aria-current": current ? "true" : null }, open, rename, remove);
  });
  if (!items.length) items.push(h("li", { class: "muted" }, "No sessions yet."));
  if (state.sessionsCursor) {
    const more = h("button", { class: "btn btn-ghost sessions-more", type: "button" }, state.loadingMore ? "Loading…" : "Load more");
    more.disabled = state.loadingMore;
    more.addEventListener("click", loadMoreSessions);
    items.push(h("li", { class: "sessions-more-item" }, more));
  }
  ui.sessions.replaceChildren(...items);
}

function relativeTime(seconds) {
  const diff = Date.now() / 1000 - seconds;
  if (diff < 60) return "just now";
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

function showConnectionState(value, detail) {
  state.connected = value === State.OPEN;
  ui.conn.dataset.state = value;
  clearInterval(showConnectionState.timer);
  if (value === State.OPEN) {
    ui.connLabel.textContent = "Connected";
  } else if (value === State.CONNECTING) {
    ui.connLabel.textContent = detail.attempt ? "Reconnecting…" : "Connecting…";
  } else if (value === State.UNAUTHORIZED) {
    ui.connLabel.textContent = "Not authorised";
    setRunning(false);
  } else {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((detail.at - Date.now()) / 1000));
      ui.connLabel.textContent = `Disconnected · retry in ${seconds}s`;
    };
    tick();
    showConnectionState.timer = setInterval(tick, 500);
    // Frames of a turn in flight are lost with the socket; session_info on reconnect
    // shows what the server stored.
    setRunning(false);
  }
  ui.conn.title = value === State.RECONNECTING ? `Connection lost (${detail.reason}). Click to retry now.` : value === State.UNAUTHORIZED ? NOT_AUTHORISED : "Connection to the platform";
  updateComposer();
}

// -- composer, actions --------------------------------------------------------------------

function send(frame) {
  return connection.send(frame);
}

function setRunning(running) {
  state.running = running;
  updateComposer();
}

function updateComposer() {
  const canType = state.connected && !state.running;
  ui.input.disabled = !canType;
  ui.send.hidden = state.running;
  ui.stop.hidden = !state.running;
  ui.send.disabled = !canType;
  ui.stop.disabled = !state.connected;
  ui.input.placeholder = ui.conn.dataset.state === State.UNAUTHORIZED ? NOT_AUTHORISED : !state.connected ? "Waiting for the connection…" : state.running ? "The model is answering…" : "Message MCP Platform…";
  if (canType && document.activeElement === document.body) ui.input.focus();
}

function sendMessage(text, prompt) {
  if (state.running || !state.connected) return false;
  const attachments = state.attachments;
  if (!text.trim() && !prompt && !attachments.length) return false;
  const requestId = `r${Date.now().toString(36)}-${++state.requestSeq}`;
  const frame = { type: "user_message", message: text, request_id: requestId };
  if (prompt) frame.prompt = prompt;
  if (attachments.length) frame.attachments = attachments.map(({ name, mime_type, data }) => ({ name, mime_type, data }));
  if (!send(frame)) return false;
  state.pendingAttachments = attachments;
  state.attachments = [];
  renderAttachments();
  showPendingTurn(requestId, text, prompt, attachments);
  return true;
}

// -- attachments: the paperclip, paste and drop; chips under the input --------------------

// What a file is when the browser does not say (it leaves `type` empty for .md, .yaml…).
const TYPES_BY_EXTENSION = {
  md: "text/markdown", markdown: "text/markdown", txt: "text/plain", log: "text/plain", csv: "text/csv",
  tsv: "text/tab-separated-values", py: "text/x-python", rs: "text/x-rust", go: "text/x-go", java: "text/x-java",
  c: "text/x-c", h: "text/x-c", cpp: "text/x-c++", ts: "text/x-typescript", html: "text/html", css: "text/css",
  json: "application/json", yaml: "application/x-yaml", yml: "application/x-yaml", toml: "application/toml",
  xml: "application/xml", js: "application/javascript", mjs: "application/javascript", sh: "application/x-sh",
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp",
};
const THUMBNAIL_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

function fileType(file) {
  const extension = /\.([A-Za-z0-9]+)$/.exec(file.name)?.[1]?.toLowerCase();
  return (file.type || TYPES_BY_EXTENSION[extension] || "application/octet-stream").toLowerCase();
}

function sizeText(bytes) {
  if (bytes >= 1048576) return `${(bytes / 1048576).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KiB`;
  return `${bytes} bytes`;
}

function typeAllowed(type, allowed) {
  return allowed.some((pattern) => pattern === type || (pattern.endsWith("/*") && type.startsWith(pattern.slice(0, -1))));
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Files picked, pasted or dropped: each checked against session_info.attachments (the
// server checks again), read as base64, and shown as a chip until the message is sent.
async function addFiles(files) {
  const limits = state.attachmentLimits;
  if (!limits) return toast("error", "Attachments are off", "This platform does not take files (chat.attachments.enabled).", "ATTACHMENT_TYPE_NOT_SUPPORTED");
  for (const file of files) {
    const type = fileType(file);
    if (state.attachments.length >= limits.max_count) {
      toast("error", ERROR_TITLES.TOO_MANY_ATTACHMENTS, `At most ${limits.max_count} files per message; ${file.name} was not added.`, "TOO_MANY_ATTACHMENTS");
      break;
    }
    if (!typeAllowed(type, limits.allowed_types)) {
      toast("error", ERROR_TITLES.ATTACHMENT_TYPE_NOT_SUPPORTED, `${file.name} is ${type}; images and text files are taken (${limits.allowed_types.join(", ")}).`, "ATTACHMENT_TYPE_NOT_SUPPORTED");
      continue;
    }
    if (file.size > limits.max_bytes) {
      toast("error", ERROR_TITLES.ATTACHMENT_TOO_LARGE, `${file.name} has ${sizeText(file.size)}; the limit is ${sizeText(limits.max_bytes)} per file.`, "ATTACHMENT_TOO_LARGE");
      continue;
    }
    const total = state.attachments.reduce((sum, a) => sum + a.size, 0) + file.size;
    if (total > limits.max_total_bytes) {
      toast("error", ERROR_TITLES.ATTACHMENT_TOO_LARGE, `With ${file.name} the files would have ${sizeText(total)}; the limit is ${sizeText(limits.max_total_bytes)} per message.`, "ATTACHMENT_TOO_LARGE");
      continue;
    }
    let data;
    try {
      data = await readBase64(file);
    } catch (error) {
      toast("error", "Attachment not read", `${file.name}: ${error?.message ?? error}`);
      continue;
    }
    state.attachments.push({ name: file.name || "pasted", mime_type: type, size: file.size, data });
  }
  renderAttachments();
}

function attachmentIcon(attachment) {
  if (attachment.data && THUMBNAIL_TYPES.has(attachment.mime_type)) {
    return h("img", { class: "attachment-thumb", alt: "", src: `data:${attachment.mime_type};base64,${attachment.data}` });
  }
  return h("span", { class: "attachment-icon", "aria-hidden": "true" }, "📄");
}

function renderAttachments() {
  clear(ui.attachments);
  state.attachments.forEach((attachment, index) => {
    const remove = h("button", { class: "icon-btn attachment-remove", type: "button", "aria-label": `Remove ${attachment.name}`, title: "Remove" }, "×");
    remove.addEventListener("click", () => {
      state.attachments.splice(index, 1);
      renderAttachments();
    });
    ui.attachments.append(h("li", { class: "attachment-chip", "data-name": attachment.name },
      attachmentIcon(attachment),
      h("span", { class: "attachment-name", title: attachment.name }, attachment.name),
      h("span", { class: "attachment-size" }, sizeText(attachment.size)),
      remove));
  });
  ui.attachments.hidden = state.attachments.length === 0;
}

// The files of a sent message, in its bubble: images shown, other files as chips (a view
// from another replica has names and sizes only).
function sentAttachments(attachments) {
  return h("div", { class: "msg-attachments" }, ...attachments.map((attachment) => {
    if (attachment.data && THUMBNAIL_TYPES.has(attachment.mime_type)) {
      return h("figure", { class: "attachment-sent", "data-name": attachment.name },
        h("img", { class: "attachment-image", alt: attachment.name, src: `data:${attachment.mime_type};base64,${attachment.data}` }),
        h("figcaption", null, `${attachment.name} · ${sizeText(attachment.size)}`));
    }
    return h("span", { class: "attachment-chip attachment-sent", "data-name": attachment.name },
      h("span", { class: "attachment-icon", "aria-hidden": "true" }, "📄"),
      h("span", { class: "attachment-name", title: attachment.name }, attachment.name),
      h("span", { class: "attachment-size" }, sizeText(attachment.size)));
  }));
}

ui.attach.addEventListener("click", () => ui.attachFile.click());
ui.attachFile.addEventListener("change", () => {
  const files = [...ui.attachFile.files];
  ui.attachFile.value = "";
  addFiles(files);
});
ui.input.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files ?? [])];
  if (!files.length) return; // text pastes as text
  event.preventDefault();
  addFiles(files);
});
// Files dropped anywhere on the page are attached (a browser would otherwise open the
// file in place of the page); the composer shows where they go.
document.addEventListener("dragover", (event) => {
  if (![...(event.dataTransfer?.types ?? [])].includes("Files")) return;
  event.preventDefault();
  ui.composer.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) ui.composer.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  ui.composer.classList.remove("dragging");
  const files = [...(event.dataTransfer?.files ?? [])];
  if (!files.length) return;
  event.preventDefault();
  addFiles(files);
});

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (sendMessage(ui.input.value)) {
    ui.input.value = "";
    autosize();
  }
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.input.addEventListener("input", autosize);

ui.stop.addEventListener("click", () => send({ type: "cancel" }));

$("new-chat").addEventListener("click", async () => {
  closeSidebar();
  const ok = await confirmDialog("Start a new chat?", state.saved
    ? "The current conversation stays in your saved sessions."
    : "The current conversation stays in the sidebar until retention removes it; save it to keep it.", "New chat");
  if (ok) send({ type: "clear_history" });
});

$("save").addEventListener("click", async () => {
  const input = h("input", { id: "save-name", type: "text", maxlength: "200", required: true, placeholder: "e.g. Trip plans" });
  input.value = state.name ?? state.title ?? "";
  const body = h("div", { class: "field" }, h("label", { for: "save-name" }, "Name"), input);
  const result = await openDialog({
    title: "Save this session",
    body,
    actions: [{ label: "Cancel", value: null }, { label: "Save", value: "save", primary: true, validate: () => input.reportValidity() && input.value.trim() !== "" }],
    focus: input,
  });
  if (result === "save") send({ type: "save_session", name: input.value.trim() });
});

$("rename").addEventListener("click", () => renameDialog(state.conversationId, state.title));
$("export").addEventListener("click", exportDialog);
$("branch").addEventListener("click", () => {
  if (state.branchedFrom) send({ type: "load_session", conversation_id: state.branchedFrom });
});
$("session-search").addEventListener("input", onSearchInput);
$("provider-picker").addEventListener("change", (event) => {
  const chosen = state.providers.find((p) => p.name === event.target.value);
  // The default entry means "the active provider", whatever it becomes later.
  const frame = !chosen || chosen.name === state.activeProvider
    ? { type: "set_provider", provider: null }
    : { type: "set_provider", provider: chosen.name, model: chosen.model };
  // Not sent (no connection): the picker goes back to what the server has.
  if (!send(frame)) renderPicker();
});
$("import").addEventListener("click", () => $("import-file").click());
$("import-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  event.target.value = "";
  if (file) importFile(file);
});

ui.conn.addEventListener("click", () => connection.retryNow());

function openSidebar() {
  document.body.classList.add("sidebar-open");
  ui.scrim.hidden = false;
  ui.menu.setAttribute("aria-expanded", "true");
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  ui.scrim.hidden = true;
  ui.menu.setAttribute("aria-expanded", "false");
}

ui.menu.addEventListener("click", () => (document.body.classList.contains("sidebar-open") ? closeSidebar() : openSidebar()));
ui.scrim.addEventListener("click", closeSidebar);

const COMPLETION_DELAY_MS = 250;

/**
 * Autocomplete a prompt argument or a resource template variable through its server
 * (`complete` frames, debounced): the suggestions fill the field's <datalist>. Only the
 * latest answer is used. `target`: {server, ref_type: "prompt" | "resource", ref}.
 */
function autocomplete(input, list, target, argument, context) {
  let timer = 0;
  let latest = null;
  const ask = () => {
    const requestId = `cmp-${++state.requestSeq}`;
    latest = requestId;
    state.completions.set(requestId, (frame) => {
      if (latest !== requestId) return;
      list.replaceChildren(...frame.values.map((value) => h("option", { value })));
    });
    send({ type: "complete", request_id: requestId, ...target, argument, value: input.value, context: context() });
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(ask, COMPLETION_DELAY_MS);
  });
  input.addEventListener("focus", () => { if (!list.children.length) ask(); });
}

function onCompletion(frame) {
  const done = state.completions.get(frame.request_id);
  state.completions.delete(frame.request_id);
  done?.(frame);
}

async function openPrompt(prompt) {
  closeSidebar();
  const fields = [];
  const body = h("div", { class: "schema-form" });
  if (prompt.description) body.append(h("p", { class: "muted" }, prompt.description));
  const completes = Boolean(state.servers.get(prompt.server)?.completions);
  for (const arg of prompt.arguments ?? []) {
    const id = `prompt-arg-${arg.name.replace(/[^\w-]/g, "_")}`;
    const list = completes ? h("datalist", { id: `${id}-values` }) : null;
    const input = h("input", { id, type: "text", required: arg.required ? true : null, "data-arg": arg.name, list: list ? list.id : null, autocomplete: "off" });
    body.append(h("div", { class: "field" },
      h("label", { for: id }, arg.name, arg.required ? h("span", { class: "required" }, " *") : null),
      input, list, arg.description ? h("div", { class: "help" }, arg.description) : null));
    fields.push([arg.name, input]);
    if (list) autocomplete(input, list, { server: prompt.server, ref_type: "prompt", ref: prompt.name }, arg.name, () => Object.fromEntries(fields.filter(([n, i]) => n !== arg.name && i.value !== "").map(([n, i]) => [n, i.value])));
  }
  const message = h("textarea", { id: "prompt-message", rows: "2", placeholder: "Optional message sent after the prompt" });
  body.append(h("div", { class: "field" }, h("label", { for: "prompt-message" }, "Message"), message));
  const valid = () => fields.every(([, input]) => input.reportValidity());
  const result = await openDialog({
    title: `Prompt · ${prompt.name}`,
    body,
    actions: [{ label: "Cancel", value: null }, { label: "Send", value: "send", primary: true, validate: valid }],
    focus: fields[0]?.[1] ?? message,
  });
  if (result !== "send") return;
  const args = {};
  for (const [name, input] of fields) if (input.value !== "") args[name] = input.value;
  if (!sendMessage(message.value, { server: prompt.server, name: prompt.name, arguments: args })) {
    toast("warning", "Not sent", state.running ? "Wait for the running answer to finish." : "Not connected.");
  }
}

/**
 * A resource template's form: one field per variable (autocompleted when its server
 * declares completions), the URI it expands to shown as it is typed; Read reads that URI
 * through the platform.
 */
async function openTemplate(template) {
  closeSidebar();
  const fields = [];
  const body = h("div", { class: "schema-form template-form" });
  if (template.description) body.append(h("p", { class: "muted" }, template.description));
  const completes = Boolean(state.servers.get(template.server)?.completions);
  const uri = h("code", { id: "template-uri", class: "template-uri" });
  const values = () => Object.fromEntries(fields.filter(([, i]) => i.value !== "").map(([n, i]) => [n, i.value]));
  const showUri = () => { uri.textContent = expandTemplate(template.uri, values()); };
  for (const name of templateVariables(template.uri)) {
    const id = `template-var-${name.replace(/[^\w-]/g, "_")}`;
    const list = completes ? h("datalist", { id: `${id}-values` }) : null;
    const input = h("input", { id, type: "text", required: true, "data-var": name, list: list ? list.id : null, autocomplete: "off" });
    input.addEventListener("input", showUri);
    body.append(h("div", { class: "field" }, h("label", { for: id }, name, h("span", { class: "required" }, " *")), input, list));
    fields.push([name, input]);
    if (list) autocomplete(input, list, { server: template.server, ref_type: "resource", ref: template.uri }, name, () => Object.fromEntries(Object.entries(values()).filter(([n]) => n !== name)));
  }
  body.append(h("div", { class: "field" }, h("span", { class: "help" }, "Reads "), uri));
  showUri();
  const result = await openDialog({
    title: `Resource · ${template.title || template.name}`,
    body,
    actions: [{ label: "Cancel", value: null }, { label: "Read", value: "read", primary: true, validate: () => fields.every(([, input]) => input.reportValidity()) }],
    focus: fields[0]?.[1],
  });
  if (result === "read") readResource(template.server, expandTemplate(template.uri, values()));
}

// -- dialogs and notifications ------------------------------------------------------------

function openDialog({ title, body, actions, focus }) {
  const dialog = ui.dialog;
  return new Promise((resolve) => {
    const buttons = actions.map((action) => {
      const button = h("button", { type: "button", class: `btn${action.primary ? " btn-primary" : ""}${action.danger ? " btn-danger" : ""}`, "data-value": action.value ?? "" }, action.label);
      button.addEventListener("click", () => {
        if (action.validate && !action.validate()) return;
        finish(action.value);
      });
      return button;
    });
    const finish = (value) => {
      dialog.removeEventListener("cancel", onCancel);
      dialog.removeEventListener("keydown", onKey);
      dialog.close();
      resolve(value);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    const onKey = (event) => {
      if (event.key === "Enter" && event.target.tagName === "INPUT") {
        event.preventDefault();
        buttons.find((b, n) => actions[n].primary)?.click();
      }
    };
    dialog.replaceChildren(h("h2", { class: "dialog-title" }, title), h("div", { class: "dialog-body" }, body), h("div", { class: "actions" }, ...buttons));
    dialog.addEventListener("cancel", onCancel);
    dialog.addEventListener("keydown", onKey);
    dialog.showModal();
    (focus ?? buttons[buttons.length - 1]).focus();
  });
}

async function confirmDialog(title, text, confirmLabel, danger = false) {
  const result = await openDialog({
    title,
    body: h("p", null, text),
    actions: [{ label: "Cancel", value: null }, { label: confirmLabel, value: "ok", primary: !danger, danger }],
  });
  return result === "ok";
}

function toast(kind, title, text, code) {
  const close = h("button", { class: "icon-btn toast-close", type: "button", "aria-label": "Dismiss" }, "×");
  const node = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", "data-code": code ?? null },
    h("div", { class: "toast-body" }, h("div", { class: "toast-title" }, title), text ? h("div", { class: "toast-text" }, text) : null,
      code ? h("div", { class: "toast-code" }, code) : null),
    close);
  // The notifications take room from the conversation (never cover it): one that was
  // scrolled to its end stays so.
  const keepingEnd = () => {
    const box = ui.messages;
    const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 160;
    return () => { if (atEnd) box.scrollTop = box.scrollHeight; };
  };
  const remove = () => {
    const restore = keepingEnd();
    node.remove();
    restore();
  };
  close.addEventListener("click", remove);
  const restore = keepingEnd();
  ui.toasts.append(node);
  // Errors stay until dismissed (they may say what to fix); the rest fade after 6 s.
  if (kind !== "error") setTimeout(remove, 6000);
  while (ui.toasts.children.length > 5) ui.toasts.firstElementChild.remove();
  restore();
}

renderHeader();
renderTools();
renderPrompts();
renderSessions();
updateComposer();
connection.start();
