/* The ipywidgets HTML manager typesets widget labels through the MathJax 2 API
 * (MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])); the book serves MathJax 3, which has
 * no Hub, so every widget label raised "Cannot read properties of undefined (reading 'Queue')".
 * This maps that one call onto MathJax 3's typesetPromise. Loaded deferred, right after
 * MathJax, on every page; it does nothing where MathJax is absent or already has a Hub. */
(function () {
  var mathjax = window.MathJax;
  if (!mathjax || mathjax.Hub) {
    return;
  }
  mathjax.Hub = {
    Queue: function () {
      Array.prototype.forEach.call(arguments, function (job) {
        if (!Array.isArray(job) || job[0] !== "Typeset") {
          return;
        }
        var element = job[2];
        var run = function () {
          if (window.MathJax.typesetPromise) {
            window.MathJax.typesetPromise(element ? [element] : undefined).catch(function (err) {
              console.error("MathJax typeset of a widget label failed: " + err);
            });
          }
        };
        var startup = window.MathJax.startup;
        if (startup && startup.promise) {
          startup.promise.then(run);
        } else {
          run();
        }
      });
    },
  };
})();
