// The ops console: plain JavaScript calling the gateway's Connect endpoints (JSON over HTTP, same origin).
// Every value shown comes from the API and is written as text, never as HTML: a push's title and body are
// a merchant's words.
"use strict";

const TOKEN_KEY = "qun.ops.token";

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class ApiError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details || [];
  }
  // Every failed rule, with its figures, from the error's details (a Verdict, a BadRequest …).
  describe() {
    const lines = [`${this.code}: ${this.message}`];
    for (const detail of this.details) {
      const debug = detail.debug || {};
      for (const failure of debug.failures || []) {
        lines.push(`  ${failure.ruleId} ${failure.reason}: ${failure.message}`);
      }
      for (const violation of debug.fieldViolations || []) {
        lines.push(`  ${violation.field}: ${violation.description}`);
      }
    }
    return lines.join("\n");
  }
}

// One unary Connect call: POST /<service>/<method> with a JSON body.
async function call(service, method, body) {
  const answer = await fetch(`/qun.gateway.v1.${service}/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token()}` },
    body: JSON.stringify(body || {}),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    throw new ApiError(data.code || `http ${answer.status}`, data.message || answer.statusText, data.details);
  }
  return data;
}

const $ = (id) => document.getElementById(id);

function text(element, value) {
  element.textContent = value === undefined || value === null ? "" : String(value);
  return element;
}

function cell(row, value) {
  return text(row.insertCell(), value);
}

function showError(id, error) {
  text($(id), error ? (error instanceof ApiError ? error.describe() : String(error)) : "");
}

function kindName(kind) {
  return String(kind || "").replace(/^PUSH_KIND_/, "").toLowerCase();
}

function when(stamp) {
  return stamp ? new Date(stamp).toLocaleString() : "";
}

// "23 h 05 min" left in the 24-hour review window; "overdue" once it has passed.
function timeLeft(endsAt) {
  const ms = new Date(endsAt).getTime() - Date.now();
  if (ms <= 0) return "overdue";
  const minutes = Math.floor(ms / 60000);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function figures(f) {
  if (!f) return "";
  const parts = [`subscribers ${f.subscribers}`, `old-customer fans ${f.oldCustomerFans}`, `recent broadcasts ${f.recentBroadcasts}`];
  if (f.revisitRateBp !== undefined) parts.push(`revisit rate ${(f.revisitRateBp / 100).toFixed(2)}%`);
  return parts.join(" · ");
}

// -- sign in ------------------------------------------------------------------------------------------

function showSignedIn() {
  const signedIn = Boolean(token());
  $("sign-in").hidden = signedIn;
  $("console").hidden = !signedIn;
  text($("who"), signedIn ? "signed in with an ops token" : "");
  if (signedIn) loadQueue();
}

async function signIn() {
  const pasted = $("token").value.trim().replace(/^Bearer\s+/i, "");
  if (!pasted) return showError("sign-in-error", "paste a token first");
  sessionStorage.setItem(TOKEN_KEY, pasted);
  try {
    await call("PushService", "ListPendingReviews", { pageSize: 1 }); // the queue is ops' only (P8)
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    return showError("sign-in-error", error);
  }
  showError("sign-in-error", "");
  $("token").value = "";
  showSignedIn();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn();
}

function showTab(name) {
  for (const [tab, section] of [["tab-queue", "queue"], ["tab-store", "store"]]) {
    const on = section === name;
    $(tab).setAttribute("aria-pressed", String(on));
    $(section).hidden = !on;
  }
}

// -- review queue (P6, P8) ----------------------------------------------------------------------------

let chosen = null;

async function loadQueue() {
  showError("queue-error", "");
  const body = $("queue-table").tBodies[0];
  try {
    const reviews = [];
    let pageToken = "";
    do {
      const page = await call("PushService", "ListPendingReviews", {
        pageSize: 100,
        pageToken,
        storeId: $("queue-store").value.trim(),
      });
      reviews.push(...(page.reviews || []));
      pageToken = page.nextPageToken || "";
    } while (pageToken && reviews.length < 1000);
    body.replaceChildren();
    for (const review of reviews) {
      const push = review.push;
      const row = body.insertRow();
      row.className = "pick";
      row.dataset.pushId = push.pushId;
      cell(row, when(push.submittedAt));
      cell(row, push.storeId);
      cell(row, kindName(push.kind));
      cell(row, push.title);
      cell(row, push.audienceSize);
      const left = cell(row, timeLeft(review.windowEndsAt));
      if (left.textContent === "overdue") left.className = "late";
      row.addEventListener("click", () => openReview(review, row));
    }
    text($("queue-count"), `${reviews.length} pending`);
  } catch (error) {
    showError("queue-error", error);
  }
}

function openReview(review, row) {
  for (const other of $("queue-table").tBodies[0].rows) other.classList.remove("chosen");
  row.classList.add("chosen");
  chosen = review.push;
  const push = review.push;
  text($("review-title"), push.title || "(no title)");
  text($("review-push-id"), push.pushId);
  text($("review-store"), push.storeId);
  text($("review-kind"), kindName(push.kind));
  text($("review-audience"), push.audienceSize);
  text($("review-window"), `${when(review.windowEndsAt)} (${timeLeft(review.windowEndsAt)} left)`);
  text($("review-figures"), figures(push.figures));
  text($("review-body"), push.body);
  $("review-note").value = "";
  text($("review-result"), "");
  showError("review-error", "");
  $("review").hidden = false;
}

async function decide(decision) {
  if (!chosen) return;
  const note = $("review-note").value.trim();
  if (decision === "REVIEW_DECISION_REJECT" && !note) {
    return showError("review-error", "a rejection needs a reason for the merchant");
  }
  try {
    const answer = await call("PushService", "ReviewPush", { pushId: chosen.pushId, decision, note });
    const state = String(answer.push.state).replace(/^PUSH_STATE_/, "").toLowerCase();
    text($("review-result"), `${answer.push.pushId}: ${state}`);
    showError("review-error", "");
    chosen = null;
    $("review").hidden = true;
    await loadQueue();
  } catch (error) {
    showError("review-error", error);
  }
}

// -- store lookup (X1, X3) ----------------------------------------------------------------------------

async function lookUpStore() {
  const storeId = $("store-id").value.trim();
  showError("store-error", "");
  $("store-result").hidden = true;
  try {
    const [capacity, sets, ledger] = await Promise.all([
      call("GroupOperationsService", "GetCapacity", { storeId }),
      call("GroupService", "ListGroupSets", { storeId, pageSize: 100 }),
      call("PushService", "GetQuotaLedger", { storeId }),
    ]);
    text(
      $("store-capacity"),
      `level ${capacity.level} · ${capacity.members} of ${capacity.memberCapacity} members · ` +
        `${capacity.groupSets} of ${capacity.groupSetCapacity} group-sets`,
    );
    const setRows = $("store-sets").tBodies[0];
    setRows.replaceChildren();
    for (const set of sets.groupSets || []) {
      const row = setRows.insertRow();
      cell(row, set.groupSetId);
      cell(row, set.name);
      cell(row, set.memberCount);
      cell(row, set.capacity);
      cell(row, (set.subGroups || []).map((s) => `${s.name} ${s.memberCount}/${s.capacity}`).join(", "));
      cell(row, set.isPublic ? "yes" : "no");
    }
    const ledgerRows = $("store-ledger").tBodies[0];
    ledgerRows.replaceChildren();
    for (const entry of ledger.entries || []) {
      const row = ledgerRows.insertRow();
      cell(row, kindName(entry.kind));
      cell(row, entry.remaining);
      cell(row, entry.availableNow ? "yes" : "no");
      cell(row, when(entry.nextPossibleAt));
      cell(row, (entry.unmet || []).map((f) => `${f.ruleId} ${f.message}`).join("; "));
    }
    $("store-result").hidden = false;
  } catch (error) {
    showError("store-error", error);
  }
}

function showVerdict(what, verdict, alreadyMember) {
  const box = $("explain-result");
  box.replaceChildren();
  const failures = (verdict && verdict.failures) || [];
  const head = document.createElement("p");
  text(head, alreadyMember ? `${what}: already a member` : failures.length ? `${what}: refused` : `${what}: allowed`);
  box.append(head);
  const list = document.createElement("ul");
  for (const failure of failures) {
    const item = document.createElement("li");
    const rule = text(document.createElement("span"), failure.ruleId);
    rule.className = "rule";
    const figures = Object.entries(failure.figures || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    item.append(rule, document.createTextNode(` ${failure.reason}: ${failure.message}${figures ? ` (${figures})` : ""}`));
    list.append(item);
  }
  box.append(list);
}

async function explain(kind) {
  showError("explain-error", "");
  const account = $("explain-account").value.trim();
  try {
    if (kind === "create") {
      const answer = await call("GroupService", "ExplainCreate", { kind: $("explain-kind").value, accountId: account });
      showVerdict(`${account} creating`, answer.verdict, false);
    } else {
      const groupSetId = $("explain-group").value.trim();
      const answer = await call("GroupService", "ExplainJoin", { groupSetId, consumerId: account });
      showVerdict(`${account} joining ${groupSetId}`, answer.verdict, answer.alreadyMember);
    }
  } catch (error) {
    $("explain-result").replaceChildren();
    showError("explain-error", error);
  }
}

// -- wiring -------------------------------------------------------------------------------------------

$("sign-in-button").addEventListener("click", signIn);
$("sign-out").addEventListener("click", signOut);
$("tab-queue").addEventListener("click", () => showTab("queue"));
$("tab-store").addEventListener("click", () => showTab("store"));
$("queue-refresh").addEventListener("click", loadQueue);
$("approve").addEventListener("click", () => decide("REVIEW_DECISION_APPROVE"));
$("reject").addEventListener("click", () => decide("REVIEW_DECISION_REJECT"));
$("store-look").addEventListener("click", lookUpStore);
$("explain-create").addEventListener("click", () => explain("create"));
$("explain-join").addEventListener("click", () => explain("join"));
showSignedIn();
