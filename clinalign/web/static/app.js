// Forget a submitted item's draft (see item.js) once the server has moved on: on the next item, the
// "nothing left" page or the history page. An error page, the sign-in page, or the same item again
// (after signing back in) keep it, so nothing typed is lost.
(function () {
  var pending = sessionStorage.getItem("clinalign-pending");
  var form = document.getElementById("judge");
  var here = form ? "clinalign-draft-" + form.dataset.draft : null;
  if (pending && document.body.dataset.afterSubmit && pending !== here) {
    sessionStorage.removeItem(pending);
    sessionStorage.removeItem("clinalign-pending");
  }
})();
