"use strict";
// The page of `cnnctl serve`: sends the chosen images to POST /predict (and /explain where the
// model has heat maps) and draws each with a bar chart of its top classes.
(function () {
  const $ = (id) => document.getElementById(id);
  const status = $("status"), results = $("results"), drop = $("drop"), input = $("files");
  let meta = null;

  function say(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value; else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function readError(response) {
    try {
      const body = await response.json();
      return body.error || JSON.stringify(body);
    } catch (e) {
      return `HTTP ${response.status}`;
    }
  }

  // The model's heat maps, as their papers name them.
  const method = () => ({cam: "CAM", gradcam: "Grad-CAM"}[meta.explain] || meta.explain);

  async function describe() {
    const response = await fetch("/metadata");
    if (!response.ok) throw new Error(await readError(response));
    meta = await response.json();
    $("model-name").textContent = meta.model;
    const accuracy = meta.test_accuracy == null ? "no test accuracy recorded"
      : `test accuracy ${(100 * meta.test_accuracy).toFixed(2)}%`;
    const classes = meta.class_names.length;
    const some = meta.class_names.slice(0, 6).join(", ") + (classes > 6 ? ", …" : "");
    const facts = [
      `${classes} classes (${some})`,
      `${meta.input_size[0]}×${meta.input_size[1]} ${meta.color_mode}`,
      `${meta.parameters.toLocaleString("en")} parameters`, accuracy];
    if (meta.explain) facts.push(`heat maps: ${method()}`);
    // one span each, so that a line breaks between them rather than inside one
    $("model-info").replaceChildren(...facts.flatMap((fact, i) =>
      [i ? " · " : "", el("span", {}, fact)]));
    $("limits").textContent = `images are resized to ${meta.input_size[0]}×${meta.input_size[1]}`;
  }

  function card(file, prediction, overlay) {
    const pictures = el("div", {class: "pictures"},
      el("figure", {}, el("img", {src: picture(file), alt: file.name}),
         el("figcaption", {}, "image")));
    if (overlay) {
      pictures.append(el("figure", {class: "overlay"},
        el("img", {src: overlay.overlay, alt: `heat map of ${file.name}`}),
        el("figcaption", {}, `${method()}: ${overlay.label}`)));
    }
    const bars = el("ol", {class: "bars"});
    for (const t of prediction.top) {
      const percent = 100 * t.prob;
      const fill = el("div", {class: "fill"});
      fill.style.width = `${Math.max(percent, 0.5).toFixed(1)}%`;
      bars.append(el("li", {}, el("span", {class: "label", title: t.label}, t.label),
                     el("div", {class: "track"}, fill),
                     el("span", {class: "prob"}, `${percent.toFixed(1)}%`)));
    }
    return el("article", {class: "result", "data-name": prediction.name},
              el("h2", {}, prediction.name), pictures, bars);
  }

  async function post(path, files) {
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const response = await fetch(path, {method: "POST", body: form});
    if (!response.ok) throw new Error(await readError(response));
    return response.json();
  }

  // The object URLs of the pictures shown, released when they are replaced.
  let shown = [];
  function picture(file) {
    const url = URL.createObjectURL(file);
    shown.push(url);
    return url;
  }

  function clear() {
    results.replaceChildren();
    for (const url of shown) URL.revokeObjectURL(url);
    shown = [];
  }

  // Each choice of images is one round; the answers of an older round (images chosen again
  // before they came back) are dropped instead of mixed into the newer one's results.
  let round = 0;

  async function classify(files) {
    files = Array.from(files).filter((f) => f.size > 0 || f.name);
    if (!files.length) return;
    const mine = ++round;
    clear();
    say(`classifying ${files.length} image${files.length > 1 ? "s" : ""}…`, "busy");
    try {
      const [predicted, explained] = await Promise.all([
        post("/predict", files),
        meta && meta.explain ? post("/explain", files).catch(() => null) : Promise.resolve(null),
      ]);
      if (mine !== round) return;
      predicted.predictions.forEach((p, i) => {
        results.append(card(files[i], p, explained ? explained.explanations[i] : null));
      });
      say(`${files.length} image${files.length > 1 ? "s" : ""} classified`, "done");
    } catch (e) {
      if (mine === round) say(e.message, "error");
    }
  }

  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = "";  // so that choosing the same files again classifies them again
    classify(files);
  });
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", (e) => {
    if (!drop.contains(e.relatedTarget)) drop.classList.remove("over");  // not into a child
  });
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classify(e.dataTransfer.files);
  });
  // A file dropped beside the zone would make the browser leave the page to open it.
  for (const kind of ["dragover", "drop"]) {
    window.addEventListener(kind, (e) => {
      if (drop.contains(e.target)) return;
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = "none";
    });
  }
  describe().catch((e) => say(`cannot read /metadata: ${e.message}`, "error"));
})();
