// Tollway console: copy buttons and confirmations. No framework, no build step.
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) return;
  var text = button.getAttribute("data-copy") || "";
  var done = function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 2000);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { select(button); });
  } else {
    select(button);
  }
});

// Without a secure context (plain http on another host) the clipboard API is off: select the
// text so that Ctrl-C copies it.
function select(button) {
  var code = button.parentNode.querySelector("code");
  if (!code) return;
  var range = document.createRange();
  range.selectNodeContents(code);
  var sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
  button.textContent = "Selected: press Ctrl-C";
}

document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});
