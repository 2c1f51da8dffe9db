/* Records JavaScript errors of the page in <html data-js-errors="[...]"> (a JSON list).
 * The browser test (tests/test_book_browser.py) reads the DOM that headless Chromium dumps
 * after running the page; this attribute is how it sees uncaught exceptions, failed loads of
 * scripts/styles/images and console.error calls. Loaded first on every page; it changes
 * nothing else. */
(function () {
  var root = document.documentElement;
  var errors = [];
  function record(message) {
    errors.push(String(message).slice(0, 500));
    root.setAttribute("data-js-errors", JSON.stringify(errors));
  }
  root.setAttribute("data-js-errors", "[]");
  window.addEventListener("error", function (event) {
    var target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      record("failed to load " + (target.src || target.href));
    } else {
      record((event.message || "error") + " (" + (event.filename || "?") + ":" +
             (event.lineno || 0) + ")");
    }
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    var reason = event.reason;
    record("unhandled promise rejection: " + ((reason && reason.message) || reason));
  });
  var consoleError = console.error;
  console.error = function () {
    record("console.error: " + Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
})();
