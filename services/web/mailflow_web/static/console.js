// Mailflow web console: the little JavaScript the pages need (no build step).
// Confirmation of destructive buttons, "select all" checkboxes; the pipeline page's live view is in pipeline.js.
"use strict";
document.addEventListener("click", (e) => {
  const b = e.target.closest("[data-confirm]");
  if (b && !window.confirm(b.dataset.confirm)) e.preventDefault();
});
document.addEventListener("change", (e) => {
  const all = e.target.closest("[data-select-all]");
  if (!all) return;
  for (const box of document.querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`)) box.checked = all.checked;
});
