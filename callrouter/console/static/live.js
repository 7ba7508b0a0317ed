/* The overview's "right now" part, kept current by Server-Sent Events from /console/live/events.
 *
 * Each `live` event carries the part's HTML, rendered and escaped by the server (templates/live_now.html);
 * it replaces the part whole. `bye` means the session ended: the page reloads, onto the login form. The
 * browser's EventSource reconnects by itself after a network error; a refused stream (the session gone)
 * reloads the page after a pause. Without JavaScript the page still shows the state at load.
 */
(function () {
  "use strict";
  var box = document.getElementById("live-now");
  var badge = document.getElementById("live-status");
  if (!box || !badge || !window.EventSource) {
    return;
  }

  function show(on) {
    badge.className = "live-status " + (on ? "live-status-on" : "live-status-off");
    badge.textContent = badge.getAttribute(on ? "data-on" : "data-off");
  }

  var source = new EventSource(box.getAttribute("data-events"));
  source.addEventListener("open", function () { show(true); });
  source.addEventListener("live", function (event) {
    box.innerHTML = event.data;
    show(true);
  });
  source.addEventListener("bye", function () {
    source.close();
    window.location.reload();
  });
  source.addEventListener("error", function () {
    show(false);
    if (source.readyState === EventSource.CLOSED) {
      window.setTimeout(function () { window.location.reload(); }, 10000);
    }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
