// Live progress on a run's admin page: poll the run's JSON while it is pending or running
// and update its fields in place; once the run has settled, fetch the page once more in the
// background and swap its content in (failed items, interventions), without a reload.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script.dataset.url;
  var every = Number(script.dataset.every || 1000);
  function cell(name) {
    return document.querySelector(".field-" + name + " .readonly");
  }
  function settle() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content");
        var current = document.getElementById("content");
        if (fresh && current) current.innerHTML = fresh.innerHTML;
        document.body.dataset.runSettled = "true";
      });
  }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (run) {
        Object.keys(run.fields).forEach(function (name) {
          var target = cell(name);
          if (target) target.innerHTML = run.fields[name];
        });
        document.body.dataset.runStatus = run.status;
        if (run.settled) {
          settle();
        } else {
          window.setTimeout(tick, every);
        }
      })
      .catch(function () {
        window.setTimeout(tick, every * 5); // the server restarting: try again, slower
      });
  }
  window.setTimeout(tick, every);
})();
