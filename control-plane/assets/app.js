// Tollgate dashboard: small progressive enhancements. Every page works without this file
// (times then read in UTC, columns cannot be hidden, copy buttons do nothing).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var COLUMNS_KEY = "tollgate.requestLog.hiddenColumns";

  function toast(message) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { el.classList.remove("show"); }, 1800);
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy failed")); }
    });
  }

  // Local time zone for every <time datetime>; SVG/HTML axis labels too. The year is left out
  // when it is the current one.
  function localTimes() {
    var thisYear = new Date().getFullYear();
    function fmt(d, opts) {
      var o = {};
      for (var k in opts) o[k] = opts[k];
      if (d.getFullYear() !== thisYear) o.year = "numeric";
      return new Intl.DateTimeFormat(undefined, o).format(d);
    }
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var precise = el.closest("[data-col=timestamp]") !== null;
      var opts = { month: "short", day: "numeric" };
      if (el.getAttribute("data-fmt") !== "date") {
        opts.hour = "numeric";
        opts.minute = "2-digit";
        if (precise) opts.second = "2-digit";
      }
      el.textContent = fmt(d, opts);
      el.title = d.toString();
    });
    document.querySelectorAll(".ts-label[data-ts]").forEach(function (el) {
      var d = new Date(el.getAttribute("data-ts"));
      if (isNaN(d.getTime())) return;
      el.textContent = el.getAttribute("data-fmt") === "date"
        ? fmt(d, { month: "short", day: "numeric" })
        : new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" }).format(d);
    });
  }

  function offsetAt(value) {
    var d = value ? new Date(value) : new Date();
    if (isNaN(d.getTime())) d = new Date();
    return String(-d.getTimezoneOffset());
  }

  // Forms marked data-tz send the viewer's UTC offset (minutes east) for local date inputs.
  function tzForms() {
    document.querySelectorAll("form[data-tz]").forEach(function (form) {
      var tz = form.querySelector("input[name=tz]");
      if (!tz) return;
      if (!tz.value) tz.value = offsetAt(null);
      form.addEventListener("submit", function () {
        var local = form.querySelector("input[type=datetime-local]");
        tz.value = offsetAt(local && local.value ? local.value : null);
      });
    });
  }

  function hiddenColumns() {
    try {
      var v = JSON.parse(localStorage.getItem(COLUMNS_KEY) || "[]");
      return Array.isArray(v) ? v : [];
    } catch (e) {
      return [];
    }
  }

  function columns() {
    var table = document.getElementById("request-log");
    if (!table) return;
    var hidden = hiddenColumns();
    document.querySelectorAll("input[data-col-toggle]").forEach(function (box) {
      var col = box.getAttribute("data-col-toggle");
      var isHidden = hidden.indexOf(col) !== -1;
      box.checked = !isHidden;
      table.classList.toggle("hide-" + col, isHidden);
      box.addEventListener("change", function () {
        var now = hiddenColumns().filter(function (c) { return c !== col; });
        if (!box.checked) now.push(col);
        try { localStorage.setItem(COLUMNS_KEY, JSON.stringify(now)); } catch (e) { /* private mode */ }
        table.classList.toggle("hide-" + col, !box.checked);
      });
    });
  }

  function customCategory() {
    document.querySelectorAll("select[data-custom-toggle]").forEach(function (select) {
      var target = document.getElementById(select.getAttribute("data-custom-toggle"));
      if (!target) return;
      var update = function () {
        var custom = select.value === "custom";
        target.classList.toggle("hidden-unless-custom", !custom);
        if (custom) {
          var input = target.querySelector("input");
          if (input && document.activeElement === select) input.focus();
        }
      };
      select.addEventListener("change", update);
      target.classList.toggle("hidden-unless-custom", select.value !== "custom");
    });
  }

  document.addEventListener("click", function (e) {
    var btn = e.target.closest ? e.target.closest("[data-copy],[data-copy-target]") : null;
    if (!btn) return;
    var text = btn.getAttribute("data-copy");
    if (text === null) {
      var input = document.getElementById(btn.getAttribute("data-copy-target"));
      if (!input) return;
      input.select();
      text = input.value;
    }
    copyText(text).then(
      function () { toast("Copied to clipboard"); },
      function () { toast("Copy failed: select the text and copy it"); }
    );
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) e.preventDefault();
  });

  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form && el.value) el.form.submit();
  });

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    tzForms();
    columns();
    customCategory();
    var secret = document.getElementById("secret-value");
    if (secret) secret.select();
  });
})();
