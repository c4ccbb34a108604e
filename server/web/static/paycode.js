/* 食堂一卡通 · the diner's pay code: count down, and fetch a new code from the server
   shortly before the shown one runs out (each code is good for 60 s and for one payment).
   Without this script the page reloads itself (<noscript> refresh) and has a refresh link. */
(function () {
  "use strict";
  var box = document.getElementById("paycode");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-code-url");
  var before = parseInt(box.getAttribute("data-refresh-before"), 10) || 10;
  var left = parseInt(box.getAttribute("data-seconds"), 10) || 0;
  var seconds = document.getElementById("paycode-seconds");
  var qr = document.getElementById("pay-qr");
  var card = document.getElementById("paycode-card");
  var status = document.getElementById("paycode-status");
  var busy = false;

  function show() { seconds.textContent = String(Math.max(left, 0)); }

  function renew() {
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok || (r.headers.get("Content-Type") || "").indexOf("application/json") !== 0) {
          throw new Error("no code");
        }
        return r.json();
      })
      .then(function (code) {
        qr.innerHTML = code.svg;  /* drawn by the server from the code it just signed */
        card.textContent = code.card;
        left = code.seconds;
        show();
        busy = false;
      })
      .catch(function () { window.location.reload(); });  /* signed out, or no card: the page says why */
  }

  window.setInterval(function () {
    left -= 1;
    show();
    if (left <= before && !busy && document.visibilityState !== "hidden") { renew(); }
    if (left <= 0 && !busy) { status.textContent = "付款码已过期，正在更换……"; renew(); }
  }, 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && left <= before && !busy) { renew(); }
  });
})();
