// The prompts page: refuse a file over the size cap before it is sent (the server refuses it too, unread).
// The test-call page: poll its status fragment while the call runs.
(function () {
  "use strict";
  document.querySelectorAll("form.upload-form").forEach(function (form) {
    var max = Number(form.getAttribute("data-max-bytes"));
    var input = form.querySelector("input[type=file]");
    var alert = form.querySelector(".size-alert");
    function check() {
      var file = input.files && input.files[0];
      if (file && max && file.size > max) {
        alert.textContent = alert.getAttribute("data-message").replace("{size}", (file.size / 1048576).toFixed(1));
        alert.hidden = false;
        return false;
      }
      alert.hidden = true;
      return true;
    }
    input.addEventListener("change", check);
    form.addEventListener("submit", function (event) {
      if (!check()) { event.preventDefault(); input.focus(); }
    });
  });
  var live = document.getElementById("testcall-live");
  if (live && live.getAttribute("data-running") === "1") {
    var url = live.getAttribute("data-url");
    var timer = window.setInterval(function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
        .then(function (html) {
          var box = document.createElement("div");
          box.innerHTML = html;
          var fresh = box.querySelector("#testcall-live");
          if (!fresh) { return; }
          live.replaceWith(fresh);
          live = fresh;
          if (fresh.getAttribute("data-running") !== "1") { window.clearInterval(timer); }
        })
        .catch(function () { window.clearInterval(timer); });
    }, 1000);
  }
})();
