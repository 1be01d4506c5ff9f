// Ki2API console: the page's logic (no framework, no build step). It talks to the JSON API
// under /ui/api/ only. Everything that comes from the API is put into the page as text
// (textContent, attributes), never as HTML. The CSRF token lives in memory only.
"use strict";

(function () {
  const I = window.Ki2I18n;
  const P = window.Ki2Plots;
  const t = I.t;
  const PAGES = ["overview", "accounts", "keys", "requests", "settings"];
  const BUCKETS = { 3600: 60, 86400: 1800, 604800: 10800 };
  const REFRESH_MS = 2000;

  const state = {
    csrf: null,
    version: "",
    page: "overview",
    signedIn: false,
    windowS: 3600,
    selectedKey: null,
    pending: {},
    again: {},
    bannerSource: null,
    updatedAt: null,
    last: {},
  };

  // ---------------------------------------------------------------- small helpers

  function $(id) {
    return document.getElementById(id);
  }

  function h(tag, props, children) {
    const node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      const v = props[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = String(v);
      else if (k === "cls") node.className = v;
      else if (k === "on") Object.keys(v).forEach(function (ev) { node.addEventListener(ev, v[ev]); });
      else node.setAttribute(k, v === true ? "" : String(v));
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function show(node, visible) {
    node.classList.toggle("hidden", !visible);
  }

  function num(n) {
    if (n === null || n === undefined) return t("common.none");
    return new Intl.NumberFormat(I.locale(), { maximumFractionDigits: 2 }).format(n);
  }

  function ms(n) {
    if (n === null || n === undefined) return t("common.none");
    if (n >= 1000) return t("common.s", { n: num(Math.round(n / 10) / 100) });
    return t("common.ms", { n: num(Math.round(n)) });
  }

  function seconds(s) {
    if (!(s > 0)) return t("common.none");
    if (s < 120) return t("common.s", { n: num(Math.round(s)) });
    const m = Math.round(s / 60);
    return m < 120 ? t("common.min", { n: num(m) }) : t("common.h", { n: num(Math.round(m / 60)) });
  }

  function dateOf(unix) {
    return new Date(unix * 1000);
  }

  function fmtTime(unix) {
    return dateOf(unix).toLocaleTimeString(I.locale(), { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function fmtDate(unix) {
    if (unix === null || unix === undefined) return t("common.none");
    return dateOf(unix).toLocaleDateString(I.locale(), { year: "numeric", month: "short", day: "numeric" });
  }

  function fmtStamp(unix) {
    const d = dateOf(unix);
    const today = new Date().toDateString() === d.toDateString();
    if (today) return fmtTime(unix);
    return d.toLocaleString(I.locale(), { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function axisTime(windowS) {
    return function (unix) {
      const d = dateOf(unix);
      if (windowS > 86400) return d.toLocaleDateString(I.locale(), { month: "numeric", day: "numeric" });
      return d.toLocaleTimeString(I.locale(), { hour: "2-digit", minute: "2-digit" });
    };
  }

  function tipTime(unix) {
    return dateOf(unix).toLocaleString(I.locale(), { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function badge(kind, text, title) {
    return h("span", { cls: "badge badge-" + kind, text: text, title: title || null });
  }

  function stateBadge(st) {
    const kind = { ok: "ok", active: "ok", resting: "warn", disabled: "off", revoked: "bad", expired: "off" }[st] || "off";
    return badge(kind, t("state." + st));
  }

  // Re-render a container only when what it shows changed (keeps hover and focus).
  function changed(key, data) {
    const sig = JSON.stringify([I.lang(), data]);
    if (state.last[key] === sig) return false;
    state.last[key] = sig;
    return true;
  }

  // ---------------------------------------------------------------- the API

  function ApiError(status, code, message, retryAfter) {
    this.status = status;
    this.code = code;
    this.message = message;
    this.retryAfter = retryAfter;
  }

  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (method !== "GET" && state.csrf) headers["x-ki2api-csrf"] = state.csrf;
    let res;
    try {
      res = await fetch(path, {
        method: method,
        headers: headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "network", t("err.network", { msg: String(e && e.message ? e.message : e) }));
    }
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.code || "http", err.message || t("err.http", { status: res.status }), res.headers.get("retry-after"));
    }
    return data;
  }

  function messageOf(err) {
    if (err.code === "throttled") return t("err.throttled", { s: err.retryAfter || "60" });
    if (["bad_admin_key", "signed_out", "csrf"].indexOf(err.code) >= 0) return t("err." + err.code);
    return err.message || t("err.http", { status: err.status });
  }

  function showError(err, source) {
    $("error-text").textContent = typeof err === "string" ? err : messageOf(err);
    state.bannerSource = source || "action";
    show($("error-banner"), true);
  }

  function clearError(source) {
    if (source && state.bannerSource !== source) return;
    show($("error-banner"), false);
    $("error-text").textContent = "";
    state.bannerSource = null;
  }

  let noticeTimer = null;
  function notice(text) {
    const box = $("notice");
    box.textContent = text;
    show(box, true);
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { show(box, false); }, 3500);
  }

  // An action the user asked for: errors go to the banner, a lost session to the sign-in form.
  async function act(method, path, body) {
    try {
      const out = await api(method, path, body);
      clearError("action");
      return out;
    } catch (err) {
      if (err.status === 401 && err.code === "signed_out") signedOut(true);
      else showError(err, "action");
      return undefined;
    }
  }

  // ---------------------------------------------------------------- sign in / out

  function placeLang() {
    const slot = state.signedIn ? $("lang-slot-app") : $("lang-slot-signin");
    slot.append($("lang-switch"));
    $("lang-switch").textContent = t("lang.other");
    $("lang-switch").title = t("lang.otherTitle");
  }

  function signedOut(expired) {
    state.signedIn = false;
    state.csrf = null;
    state.last = {};
    state.selectedKey = null;
    hideNewKey();
    // Nothing of the signed-in console stays in the page.
    ["accounts-body", "keys-body", "requests-body", "settings-body", "plot-requests", "plot-tokens",
      "plot-ttft", "key-usage-plot"].forEach(function (id) {
      $(id).replaceChildren();
      $(id).ki2Sig = null;
    });
    show($("key-usage"), false);
    ["key-form", "account-form"].forEach(function (id) { $(id).reset(); });
    show($("app"), false);
    show($("signin"), true);
    placeLang();
    if (expired) showError(t("err.signed_out"), "session");
    $("login-key").focus();
  }

  function enter(session) {
    state.csrf = session.csrf;
    state.version = session.version || "";
    state.signedIn = true;
    $("version").textContent = state.version ? "Ki2API " + state.version : "";
    show($("signin"), false);
    show($("app"), true);
    placeLang();
    clearError("session");
    navigate(pageOf(location.pathname), false);
  }

  async function login(ev) {
    ev.preventDefault();
    const input = $("login-key");
    const key = input.value;
    if (!key) {
      showError(t("err.emptyKey"), "login");
      return;
    }
    const button = $("login-submit");
    button.disabled = true;
    button.textContent = t("signin.busy");
    try {
      const session = await api("POST", "/ui/api/login", { admin_key: key });
      input.value = "";
      clearError();
      enter(session);
    } catch (err) {
      showError(err, "login");
      input.select();
    } finally {
      button.disabled = false;
      button.textContent = t("signin.submit");
    }
  }

  async function logout() {
    try {
      await api("POST", "/ui/api/logout");
    } catch (err) {
      /* signed out either way: the cookie is gone or no longer valid */
    }
    clearError();
    signedOut(false);
  }

  // ---------------------------------------------------------------- routing and the live loop

  function pageOf(path) {
    const m = /^\/ui\/([a-z]+)\/?$/.exec(path);
    return m && PAGES.indexOf(m[1]) >= 0 ? m[1] : "overview";
  }

  function navigate(page, push) {
    state.page = page;
    if (push && location.pathname !== "/ui/" + page) history.pushState({ page: page }, "", "/ui/" + page);
    else if (location.pathname !== "/ui/" + page) history.replaceState({ page: page }, "", "/ui/" + page);
    PAGES.forEach(function (p) {
      show($("page-" + p), p === page);
    });
    document.querySelectorAll(".nav a").forEach(function (a) {
      const on = a.getAttribute("data-page") === page;
      a.classList.toggle("active", on);
      if (on) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    $("page-title").textContent = t("nav." + page);
    document.title = t("nav." + page) + " · " + t("app.title");
    refresh();
  }

  const loaders = {
    overview: loadOverview,
    accounts: loadAccounts,
    keys: loadKeys,
    requests: loadRequests,
    settings: loadSettings,
  };

  // One fetch per page at a time; a refresh asked for meanwhile (after an action) runs next.
  async function refresh() {
    const page = state.page;
    if (!state.signedIn) return;
    if (state.pending[page]) {
      state.again[page] = true;
      return;
    }
    state.pending[page] = true;
    try {
      await loaders[page]();
      state.updatedAt = Date.now() / 1000;
      clearError("refresh");
    } catch (err) {
      if (err.status === 401 && err.code === "signed_out") signedOut(true);
      else if (state.signedIn) showError(err, "refresh");
    } finally {
      state.pending[page] = false;
      showLive();
    }
    if (state.again[page]) {
      state.again[page] = false;
      refresh();
    }
  }

  function showLive() {
    const paused = document.hidden;
    $("live").classList.toggle("paused", paused);
    $("live-text").textContent = paused ? t("live.paused") : t("live.on");
    $("updated").textContent = state.updatedAt ? t("live.updated", { time: fmtTime(state.updatedAt) }) : "";
  }

  // ---------------------------------------------------------------- overview

  function seriesOf(data, field) {
    return data.series.map(function (b) { return b[field]; });
  }

  function drawUsage(where, data, kind) {
    const times = data.series.map(function (b) { return b.t; });
    const x = axisTime(data.window_s);
    const base = { times: times, xFormat: x, tipTime: tipTime, emptyText: t("plot.noData") };
    if (kind === "requests") {
      P.render(where, Object.assign({}, base, {
        kind: "bar", title: t("ov.plotRequests"), integer: true,
        series: [
          { label: t("series.requests"), cls: "s-requests", values: seriesOf(data, "requests") },
          { label: t("series.errors"), cls: "s-errors", values: seriesOf(data, "errors") },
        ],
      }));
    } else if (kind === "tokens") {
      P.render(where, Object.assign({}, base, {
        kind: "line", title: t("ov.plotTokens"), integer: true,
        series: [
          { label: t("series.input"), cls: "s-input", values: seriesOf(data, "input_tokens") },
          { label: t("series.output"), cls: "s-output", values: seriesOf(data, "output_tokens") },
        ],
      }));
    } else {
      P.render(where, Object.assign({}, base, {
        kind: "line", title: t("ov.plotTtft"), tipFormat: ms, emptyText: null,
        series: [
          { label: t("series.p50"), cls: "s-p50", values: seriesOf(data, "ttft_p50_ms") },
          { label: t("series.p95"), cls: "s-p95", values: seriesOf(data, "ttft_p95_ms") },
        ],
      }));
    }
  }

  function usagePath(base) {
    return base + "?window_s=" + state.windowS + "&bucket_s=" + BUCKETS[state.windowS];
  }

  async function loadOverview() {
    const data = await api("GET", usagePath("/ui/api/overview"));
    const tot = data.totals;
    $("tile-requests").textContent = num(tot.requests);
    $("tile-errors").textContent = num(tot.errors);
    $("tile-errors").classList.toggle("tile-bad", tot.errors > 0);
    const pct = tot.requests ? ((100 * tot.errors) / tot.requests).toFixed(1) + "%" : "0%";
    $("tile-errors-sub").textContent = t("ov.errorRate", { pct: pct });
    $("tile-in").textContent = num(tot.input_tokens);
    $("tile-out").textContent = num(tot.output_tokens);
    $("tile-p50").textContent = ms(tot.ttft_p50_ms);
    $("tile-p95").textContent = ms(tot.ttft_p95_ms);
    const acc = data.accounts || { total: 0, usable: 0, resting: 0, disabled: 0 };
    $("tile-accounts").textContent = num(acc.usable) + " / " + num(acc.total);
    const idle = acc.resting === 0 && acc.disabled === 0;
    $("tile-accounts-sub").textContent = idle ? t("ov.allUsable") : t("ov.accountsSub", acc);
    document.querySelectorAll("#window-select button").forEach(function (b) {
      b.classList.toggle("on", Number(b.getAttribute("data-window")) === state.windowS);
    });
    drawUsage($("plot-requests"), data, "requests");
    drawUsage($("plot-tokens"), data, "tokens");
    drawUsage($("plot-ttft"), data, "ttft");
  }

  // ---------------------------------------------------------------- accounts

  function quotaCell(q) {
    if (!q || q.limit === null || q.limit === undefined) return h("span", { cls: "muted", text: t("acc.quotaUnknown") });
    const used = q.used !== null && q.used !== undefined ? q.used : q.limit - (q.remaining || 0);
    const share = q.limit > 0 ? Math.min(1, Math.max(0, used / q.limit)) : 1;
    const fill = h("div", { cls: "quota-fill" + (share >= 0.9 ? " quota-bad" : share >= 0.7 ? " quota-warn" : "") });
    fill.style.width = (share * 100).toFixed(1) + "%";
    const remaining = q.remaining !== null && q.remaining !== undefined ? q.remaining : q.limit - used;
    return h("div", { cls: "quota", "data-testid": "quota-bar", title: Math.round(share * 100) + "%" }, [
      h("div", { cls: "quota-track" }, [fill]),
      h("div", { cls: "quota-text" }, [
        h("span", { text: t("acc.quotaText", { used: num(used), limit: num(q.limit) }) }),
        h("span", { cls: "muted", text: t("acc.remaining", { n: num(remaining) }) }),
      ]),
    ]);
  }

  function accountIdCell(a) {
    const login = a.login || {};
    const lines = [h("strong", { cls: "mono", text: a.id })];
    const meta = [a.source, login.auth_method].filter(Boolean).join(" · ");
    if (meta) lines.push(h("div", { cls: "sub", text: meta }));
    if (login.seconds_left > 0) lines.push(h("div", { cls: "sub", text: t("acc.tokenLeft", { n: seconds(login.seconds_left) }) }));
    if (a.warning) lines.push(h("div", { cls: "sub sub-warn", text: a.warning }));
    if (a.disabled_reason) lines.push(h("div", { cls: "sub sub-bad", text: a.disabled_reason }));
    if (login.last_error) lines.push(h("div", { cls: "sub sub-bad", text: t("acc.loginError", { msg: login.last_error }) }));
    return h("td", {}, lines);
  }

  function chips(items) {
    if (!items || !items.length) return h("span", { cls: "muted", text: t("common.none") });
    const shown = items.slice(0, 2).map(function (m) { return h("span", { cls: "chip", text: m }); });
    if (items.length > 2) shown.push(h("span", { cls: "chip chip-more", text: "+" + (items.length - 2), title: items.join("\n") }));
    return h("div", { cls: "chips" }, shown);
  }

  function accountRow(a) {
    const path = "/ui/api/accounts/" + encodeURIComponent(a.id) + "/";
    const toggle = a.enabled ? "disable" : "enable";
    return h("tr", { "data-testid": "account-row", "data-account-id": a.id }, [
      accountIdCell(a),
      h("td", {}, [
        stateBadge(a.state),
        a.cooldown_s > 0 ? h("div", { cls: "sub", text: t("acc.rests", { n: seconds(a.cooldown_s) }) }) : null,
        a.reason ? h("div", { cls: "sub", text: a.reason }) : null,
      ]),
      h("td", { cls: "col-quota" }, [quotaCell(a.quota)]),
      h("td", { cls: "nowrap", text: a.quota ? fmtDate(a.quota.reset_at) : t("common.none") }),
      h("td", { cls: "num", text: num(a.inflight) + (a.max_inflight ? " / " + num(a.max_inflight) : "") }),
      h("td", {}, [
        h("div", { cls: "nowrap", text: a.region || t("common.none") }),
        a.profile_arn ? h("div", { cls: "sub mono ellipsis", text: a.profile_arn.split("/").pop(), title: a.profile_arn }) : null,
        a.network ? h("div", { cls: "sub", text: a.network }) : null,
      ]),
      h("td", {}, [chips(a.models)]),
      h("td", { cls: "col-actions" }, [
        h("button", { type: "button", cls: "btn btn-sm", text: t("acc." + toggle), on: { click: function () { accountAction(path + toggle, a.id); } } }),
        h("button", { type: "button", cls: "btn btn-sm", text: t("acc.refresh"), on: { click: function () { accountAction(path + "refresh", a.id); } } }),
      ]),
    ]);
  }

  async function accountAction(path, id) {
    const out = await act("POST", path);
    if (out) notice(t("acc.done", { id: id }));
    refresh();
  }

  async function loadAccounts() {
    const data = await api("GET", "/ui/api/accounts");
    if (!changed("accounts", data)) return;
    $("accounts-body").replaceChildren.apply($("accounts-body"), data.accounts.map(accountRow));
    show($("accounts-empty"), data.accounts.length === 0);
  }

  async function addAccount(ev) {
    ev.preventDefault();
    const body = { token_json: $("account-token").value };
    const id = $("account-id").value.trim();
    if (id) body.id = id;
    const out = await act("POST", "/ui/api/accounts", body);
    if (!out) return;
    $("account-token").value = "";
    $("account-id").value = "";
    notice(t("acc.added", { id: out.account ? out.account.id : id }));
    refresh();
  }

  // ---------------------------------------------------------------- keys

  function limitsText(l) {
    if (!l) return t("keys.noLimits");
    const parts = [];
    if (l.rpm !== null && l.rpm !== undefined) parts.push("rpm " + num(l.rpm));
    if (l.tpm !== null && l.tpm !== undefined) parts.push("tpm " + num(l.tpm));
    if (l.daily_tokens !== null && l.daily_tokens !== undefined) parts.push(t("keys.daily") + " " + num(l.daily_tokens));
    if (l.monthly_requests !== null && l.monthly_requests !== undefined) parts.push(t("keys.monthly") + " " + num(l.monthly_requests));
    if (l.models && l.models.length) parts.push(l.models.join(", "));
    return parts.length ? parts.join(" · ") : t("keys.noLimits");
  }

  function keyButton(label, cls, handler, testid) {
    return h("button", { type: "button", cls: "btn btn-sm " + (cls || ""), text: label, "data-testid": testid || null, on: { click: handler } });
  }

  function keyRow(k) {
    const path = "/ui/api/keys/" + encodeURIComponent(k.name) + "/";
    const u = k.usage_24h || { requests: 0, input_tokens: 0, output_tokens: 0 };
    const actions = [];
    if (k.state !== "revoked") {
      const toggle = k.state === "disabled" ? "enable" : "disable";
      actions.push(keyButton(t("keys." + toggle), "", function () { keyAction(path + toggle, k.name); }));
      actions.push(keyButton(t("keys.rotate"), "", function () {
        if (window.confirm(t("keys.confirmRotate", { name: k.name }))) keyAction(path + "rotate", k.name);
      }));
      actions.push(keyButton(t("keys.revoke"), "btn-danger", function () {
        if (window.confirm(t("keys.confirmRevoke", { name: k.name }))) keyAction(path + "revoke", k.name);
      }, "key-revoke"));
    }
    const name = h("button", { type: "button", cls: "link mono", text: k.name, on: { click: function () { selectKey(k.name); } } });
    return h("tr", { "data-testid": "key-row", "data-key-name": k.name, cls: state.selectedKey === k.name ? "selected" : null }, [
      h("td", {}, [name]),
      h("td", { cls: "mono muted nowrap", text: k.hint || t("common.none") }),
      h("td", {}, [stateBadge(k.state)]),
      h("td", { cls: "limits", text: limitsText(k.limits) }),
      h("td", { text: t("keys.usageText", { requests: num(u.requests), tin: num(u.input_tokens), tout: num(u.output_tokens) }) }),
      h("td", { cls: "nowrap", text: fmtDate(k.created_at) }),
      h("td", { cls: "nowrap", text: k.expires_at ? fmtDate(k.expires_at) : t("keys.never") }),
      h("td", { cls: "col-actions" }, actions),
    ]);
  }

  async function keyAction(path, name) {
    const out = await act("POST", path);
    if (out && out.key) showNewKey(name, out.key);
    else if (out) notice(t("acc.done", { id: name }));
    refresh();
  }

  async function loadKeys() {
    const data = await api("GET", "/ui/api/keys");
    if (changed("keys", [data, state.selectedKey])) {
      $("keys-body").replaceChildren.apply($("keys-body"), data.keys.map(keyRow));
      show($("keys-empty"), data.keys.length === 0);
    }
    if (state.selectedKey) {
      const path = usagePath("/ui/api/keys/" + encodeURIComponent(state.selectedKey) + "/usage");
      const usage = await api("GET", path);
      usage.window_s = usage.window_s || state.windowS;
      drawUsage($("key-usage-plot"), usage, "requests");
      const tot = usage.totals;
      $("key-usage-sum").textContent = t("keys.usageSum", {
        window: t({ 3600: "win.1h", 86400: "win.24h", 604800: "win.7d" }[state.windowS]),
        requests: num(tot.requests), errors: num(tot.errors), tin: num(tot.input_tokens),
        tout: num(tot.output_tokens), p50: ms(tot.ttft_p50_ms),
      });
    }
  }

  function selectKey(name) {
    state.selectedKey = name;
    $("key-usage-title").textContent = t("keys.usageTitle", { name: name });
    show($("key-usage"), true);
    refresh();
  }

  function closeKeyUsage() {
    state.selectedKey = null;
    show($("key-usage"), false);
    $("key-usage-sum").textContent = "";
    $("key-usage-plot").replaceChildren();
    $("key-usage-plot").ki2Sig = null;
    state.last.keys = null;
    refresh();
  }

  function showNewKey(name, key) {
    $("new-key-title").textContent = t("keys.newTitle", { name: name });
    $("new-key").textContent = key;
    $("new-key-copy").textContent = t("keys.copy");
    show($("new-key-box"), true);
  }

  function hideNewKey() {
    $("new-key").textContent = "";
    show($("new-key-box"), false);
  }

  async function copyNewKey() {
    const text = $("new-key").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents($("new-key"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      document.execCommand("copy");
    }
    $("new-key-copy").textContent = t("keys.copied");
  }

  function numberField(id) {
    const v = $(id).value.trim();
    return v === "" ? undefined : Number(v);
  }

  async function createKey(ev) {
    ev.preventDefault();
    const body = { name: $("key-name").value.trim() };
    const fields = { rpm: "key-rpm", tpm: "key-tpm", daily_tokens: "key-daily", monthly_requests: "key-monthly" };
    Object.keys(fields).forEach(function (k) {
      const v = numberField(fields[k]);
      if (v !== undefined) body[k] = v;
    });
    const models = $("key-models").value.trim();
    if (models) body.models = models;
    const expires = $("key-expires").value;
    if (expires) body.expires = expires;
    const out = await act("POST", "/ui/api/keys", body);
    if (!out) return;
    showNewKey(body.name, out.key);
    $("key-form").reset();
    refresh();
  }

  // ---------------------------------------------------------------- requests and settings

  function outcomeCell(r) {
    const kind = r.outcome === "ok" ? "ok" : r.outcome === "cancelled" ? "off" : "bad";
    return h("td", {}, [
      badge(kind, r.outcome || t("common.none")),
      r.status ? h("span", { cls: "status mono", text: String(r.status) }) : null,
    ]);
  }

  function requestRow(r) {
    return h("tr", { "data-testid": "request-row" }, [
      h("td", { cls: "nowrap", text: fmtStamp(r.at), title: new Date(r.at * 1000).toISOString() }),
      h("td", { cls: "mono" }, [r.endpoint || "", r.stream ? h("span", { cls: "chip chip-stream", text: t("req.stream") }) : null]),
      h("td", { cls: "mono", text: r.model || t("common.none") }),
      h("td", { cls: "mono", text: r.account_id || t("common.none") }),
      h("td", { cls: "mono", text: r.key || t("common.none") }),
      outcomeCell(r),
      h("td", { cls: "num", text: ms(r.latency_ms) }),
      h("td", { cls: "num", text: ms(r.ttft_ms) }),
      h("td", { cls: "num", text: num(r.input_tokens) + " / " + num(r.output_tokens) }),
      h("td", { cls: "num", text: num(r.attempts) }),
    ]);
  }

  async function loadRequests() {
    const data = await api("GET", "/ui/api/requests?limit=100");
    if (!changed("requests", data)) return;
    $("requests-body").replaceChildren.apply($("requests-body"), data.requests.map(requestRow));
    show($("requests-empty"), data.requests.length === 0);
    $("requests-count").textContent = t("req.count", { n: data.requests.length });
  }

  function settingValue(s) {
    if (s.secret) return h("td", {}, [badge(s.set ? "ok" : "off", s.set ? t("set.secretSet") : t("set.secretUnset"))]);
    return h("td", { cls: "mono wrap" }, [
      s.value === "" ? h("span", { cls: "muted", text: t("common.none") }) : s.value,
      s.set ? " " : null,
      s.set ? badge("info", t("set.fromEnv")) : null,
    ]);
  }

  function settingRow(s) {
    return h("tr", { "data-testid": "settings-row", "data-setting": s.name }, [
      h("td", { cls: "mono nowrap", text: s.name }),
      settingValue(s),
      h("td", { cls: "mono wrap muted", text: s.secret ? "" : s.default }),
      h("td", { cls: "help", text: s.help }),
    ]);
  }

  async function loadSettings() {
    const data = await api("GET", "/ui/api/settings");
    const needle = $("settings-filter").value.trim().toLowerCase();
    const rows = data.settings.filter(function (s) {
      return !needle || [s.name, s.secret ? "" : s.value, s.help].join(" ").toLowerCase().indexOf(needle) >= 0;
    });
    if (!changed("settings", rows)) return;
    $("settings-body").replaceChildren.apply($("settings-body"), rows.map(settingRow));
  }

  // ---------------------------------------------------------------- wiring

  function switchLang() {
    I.setLang(I.lang() === "zh" ? "en" : "zh");
    I.apply(document);
    placeLang();
    state.last = {};
    document.querySelectorAll(".plot").forEach(function (p) { p.ki2Sig = null; });
    if (state.selectedKey) $("key-usage-title").textContent = t("keys.usageTitle", { name: state.selectedKey });
    if (state.signedIn) {
      $("page-title").textContent = t("nav." + state.page);
      document.title = t("nav." + state.page) + " · " + t("app.title");
      showLive();
      refresh();
    } else {
      document.title = t("signin.title") + " · " + t("app.title");
      $("login-submit").textContent = t("signin.submit");
    }
  }

  function wire() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("lang-switch").addEventListener("click", switchLang);
    $("error-close").addEventListener("click", function () { clearError(); });
    $("key-form").addEventListener("submit", createKey);
    $("account-form").addEventListener("submit", addAccount);
    $("new-key-copy").addEventListener("click", copyNewKey);
    $("new-key-hide").addEventListener("click", hideNewKey);
    $("key-usage-close").addEventListener("click", closeKeyUsage);
    $("settings-filter").addEventListener("input", function () { refresh(); });
    document.querySelectorAll(".nav a").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
        ev.preventDefault();
        navigate(a.getAttribute("data-page"), true);
      });
    });
    document.querySelectorAll("#window-select button").forEach(function (b) {
      b.addEventListener("click", function () {
        state.windowS = Number(b.getAttribute("data-window"));
        try { localStorage.setItem("ki2api.console.window", String(state.windowS)); } catch (e) { /* ignore */ }
        refresh();
      });
    });
    window.addEventListener("popstate", function () {
      if (state.signedIn) navigate(pageOf(location.pathname), false);
    });
    document.addEventListener("visibilitychange", function () {
      showLive();
      if (!document.hidden) refresh();
    });
    let resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(refresh, 150);
    });
    setInterval(function () {
      if (!document.hidden) refresh();
    }, REFRESH_MS);
  }

  async function boot() {
    I.apply(document);
    try {
      const saved = Number(localStorage.getItem("ki2api.console.window"));
      if (BUCKETS[saved]) state.windowS = saved;
    } catch (e) { /* ignore */ }
    wire();
    placeLang();
    try {
      enter(await api("GET", "/ui/api/session"));
    } catch (err) {
      if (err.status !== 401) showError(err, "session");
      document.title = t("signin.title") + " · " + t("app.title");
      signedOut(false);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
