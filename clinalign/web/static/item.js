// The comparison screen: keyboard shortcuts, and a draft kept in this tab until the server has it.
(function () {
  var form = document.getElementById("judge");
  if (!form) return;
  var rows = Array.prototype.slice.call(form.querySelectorAll("tr[data-row]"));
  var cursor = 0;
  var draftKey = "clinalign-draft-" + form.dataset.draft;

  function showCursor() {
    rows.forEach(function (r, i) { r.classList.toggle("cursor", i === cursor); });
    if (rows[cursor]) rows[cursor].scrollIntoView({ block: "nearest" });
  }
  function firstUnrated() {
    for (var i = 0; i < rows.length; i++) if (!rows[i].querySelector("input:checked")) return i;
    return rows.length - 1;
  }
  function choiceChanged() {
    // "Cannot judge" needs no ratings: the clinician declined the item.
    var chosen = form.querySelector("input[name=choice]:checked");
    var declined = chosen && chosen.value === "cannot_judge";
    rows.forEach(function (r) {
      r.querySelectorAll("input").forEach(function (i) { i.required = !declined; });
    });
  }
  function save() {
    var data = {};
    new FormData(form).forEach(function (value, key) {
      if (key === "csrf") return;
      (data[key] = data[key] || []).push(value);
    });
    sessionStorage.setItem(draftKey, JSON.stringify(data));
  }
  function restore() {
    var raw = sessionStorage.getItem(draftKey);
    if (!raw || form.dataset.editing) return;
    var data = JSON.parse(raw);
    Object.keys(data).forEach(function (key) {
      form.querySelectorAll("[name='" + key + "']").forEach(function (field) {
        if (field.type === "radio" || field.type === "checkbox") field.checked = data[key].indexOf(field.value) >= 0;
        else field.value = data[key][0];
      });
    });
  }

  document.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); return; }
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text")) return;
    var key = e.key.toLowerCase();
    var option = form.querySelector("input[name=choice][data-key='" + key + "']");
    if (option) { option.checked = true; choiceChanged(); save(); e.preventDefault(); return; }
    if (key >= "1" && key <= "5" && rows[cursor]) {
      var input = rows[cursor].querySelector("input[value='" + key + "']");
      if (input) { input.checked = true; cursor = Math.min(cursor + 1, rows.length - 1); showCursor(); save(); }
      e.preventDefault();
    } else if (key === "j" || key === "arrowdown") { cursor = Math.min(cursor + 1, rows.length - 1); showCursor(); e.preventDefault(); }
    else if (key === "k" || key === "arrowup") { cursor = Math.max(cursor - 1, 0); showCursor(); e.preventDefault(); }
    else if (key === "?") { document.getElementById("help").hidden = !document.getElementById("help").hidden; }
  });
  document.getElementById("help-toggle").addEventListener("click", function () {
    var help = document.getElementById("help"); help.hidden = !help.hidden;
  });
  rows.forEach(function (r, i) { r.addEventListener("click", function () { cursor = i; showCursor(); }); });
  form.addEventListener("change", function () { choiceChanged(); save(); });
  form.addEventListener("input", save);
  form.addEventListener("submit", function () { save(); sessionStorage.setItem("clinalign-pending", draftKey); });

  restore();
  choiceChanged();
  cursor = firstUnrated();
  showCursor();
})();
