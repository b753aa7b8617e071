/* A dataset upload with a progress bar: a form with data-upload is sent by XMLHttpRequest,
 * whose upload progress events move its <progress>. A file over data-max-bytes is refused
 * before a byte is sent (the server refuses it too, by its Content-Length: 413). Without
 * this script the form posts as any form does. */
(function () {
  "use strict";
  function size(bytes) {
    var units = ["bytes", "KB", "MB", "GB", "TB"];
    var value = bytes;
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
  }
  document.addEventListener("submit", function (event) {
    var form = event.target.closest && event.target.closest("form[data-upload]");
    if (!form || event.defaultPrevented || typeof FormData === "undefined") return;
    var input = form.querySelector("input[type=file]");
    var file = input && input.files && input.files[0];
    var status = form.querySelector(".upload-status");
    var bar = form.querySelector("progress");
    var button = form.querySelector("button[type=submit]");
    var max = parseInt(form.getAttribute("data-max-bytes") || "0", 10);
    event.preventDefault();
    if (!file) { status.textContent = "Choose a file first."; return; }
    if (max && file.size > max) {
      status.textContent = "The file is too large: " + size(file.size) + "; datasets are limited to " + size(max) + ".";
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.upload.addEventListener("progress", function (progress) {
      if (!progress.lengthComputable) return;
      bar.max = progress.total;
      bar.value = progress.loaded;
      status.textContent = "Uploading: " + Math.floor(100 * progress.loaded / progress.total) + "% of " + size(progress.total);
    });
    xhr.addEventListener("load", function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = {}; }
      if (xhr.status === 201 && body.url) {
        bar.value = bar.max;
        status.textContent = body.message || "Stored.";
        window.location.assign(body.url);
        return;
      }
      status.textContent = body.error || ("The upload failed (" + xhr.status + ").");
      bar.hidden = true;
      button.disabled = false;
    });
    xhr.addEventListener("error", function () {
      status.textContent = "The upload was interrupted: the connection failed.";
      bar.hidden = true;
      button.disabled = false;
    });
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    status.textContent = "Uploading " + file.name + " (" + size(file.size) + ")…";
    xhr.send(new FormData(form));
  });
})();
