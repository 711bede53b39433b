// The console's only script, served by the app (Content-Security-Policy: script-src 'self').
// It fills in local times, counts down to the cancel window's bounds and reloads pages of runs
// that are under way. The pages work without it: times are also shown in UTC.
(function () {
  "use strict";

  var body = document.body;
  // The server's clock decides the window; correct for the viewer's clock being off.
  var skew = 0;
  var serverNow = Date.parse(body.getAttribute("data-server-now") || "");
  if (!isNaN(serverNow)) {
    skew = serverNow - Date.now();
  }
  function now() {
    return Date.now() + skew;
  }

  function two(n) {
    return (n < 10 ? "0" : "") + n;
  }
  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    return (h > 0 ? h + " h " + two(m) : String(m)) + " min " + two(s % 60) + " s";
  }

  var locals = document.querySelectorAll("[data-local-time]");
  for (var i = 0; i < locals.length; i++) {
    var at = new Date(locals[i].getAttribute("data-local-time"));
    if (!isNaN(at.getTime())) {
      locals[i].textContent =
        "(" + at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }) + " local)";
    }
  }

  var countdown = document.getElementById("countdown");
  function tick() {
    var opens = Date.parse(countdown.getAttribute("data-opens"));
    var closes = Date.parse(countdown.getAttribute("data-closes"));
    var t = now();
    var state;
    var text;
    if (t < opens) {
      state = "TooEarly";
      text = "Not open yet: opens in " + duration(opens - t) + ".";
    } else if (t < closes) {
      state = "Open";
      text = "Open now: closes in " + duration(closes - t) + ".";
    } else {
      state = "Closed";
      text = "Closed.";
    }
    countdown.textContent = text;
    countdown.setAttribute("data-state", state);
  }
  if (countdown) {
    tick();
    window.setInterval(tick, 1000);
  }

  // Reload while a run is under way, but never over something the operator is typing.
  var every = parseInt(body.getAttribute("data-refresh-seconds") || "0", 10);
  function busy() {
    var fields = document.querySelectorAll("input[type=text], input[type=checkbox], select");
    for (var j = 0; j < fields.length; j++) {
      var field = fields[j];
      if (field === document.activeElement) return true;
      if (field.type === "checkbox" && field.checked) return true;
      if (field.type === "text" && field.value && field.form && field.form.method === "post") {
        return true;
      }
    }
    return false;
  }
  function again() {
    if (busy()) {
      window.setTimeout(again, every * 1000);
    } else {
      window.location.reload();
    }
  }
  if (every > 0) {
    window.setTimeout(again, every * 1000);
  }
})();
