"""The web page of ``pixclass serve`` (``GET /``): one self-contained HTML file, no external resources.

Drop or choose images; each is sent to ``/predict`` on its own (the server batches them) and shown with
its top-k as bars; "Grad-CAM" asks ``/explain`` for the overlay. Text from the server and file names
are set with ``textContent`` only, never parsed as HTML.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>pixclass</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
h1{font-size:1.5em;margin-bottom:.1em} #meta{color:#666;margin-bottom:1em}
#drop{border:2px dashed #999;border-radius:8px;padding:2em;text-align:center;color:#555;cursor:pointer}
#drop.over{background:#eef6ff;border-color:#38f}
#cards{display:flex;flex-wrap:wrap;gap:1em;margin-top:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em;width:240px}
.card img.thumb{width:100%;max-height:200px;object-fit:contain;image-rendering:pixelated;background:#f4f4f4}
.card img.overlay{width:100%;margin-top:.4em;image-rendering:pixelated}
.name{font-size:.8em;color:#777;word-break:break-all} .label{font-weight:600;font-size:1.1em}
.row{display:flex;align-items:center;gap:.4em;font-size:.85em;margin:.1em 0}
.row .l{width:35%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.row .b{flex:1;background:#eee;height:.8em;border-radius:3px} .row .b div{background:#38f;height:100%;border-radius:3px}
.row .p{width:3.5em;text-align:right} .error{color:#b00} button{margin-top:.4em}
</style></head>
<body>
<h1>pixclass</h1><div id="meta">loading the model...</div>
<div id="drop">Drop images here, or <label style="text-decoration:underline;cursor:pointer">choose files
<input id="files" type="file" accept="image/*" multiple hidden></label></div>
<div id="cards"></div>
<script>
"use strict";
const $ = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; };
const pct = p => (100 * p).toFixed(1) + "%";

async function answer(resp) {
  let body = null;
  try { body = await resp.json(); } catch (e) { body = {error: "HTTP " + resp.status}; }
  if (!resp.ok) throw new Error(body.error || ("HTTP " + resp.status));
  return body;
}

async function showMeta() {
  try {
    const m = await answer(await fetch("metadata"));
    document.getElementById("meta").textContent =
      `${m.model} - ${m.classes.length} classes (${m.classes.join(", ")}) - ${m.input_size}px - ${m.backend}`;
  } catch (e) { document.getElementById("meta").textContent = e.message; setTimeout(showMeta, 1000); }
}

function bars(card, topk) {
  for (const t of topk) {
    const row = $("div", "row"), bar = $("div", "b"), fill = $("div");
    fill.style.width = pct(t.prob); bar.appendChild(fill);
    row.append($("span", "l", t.label), bar, $("span", "p", pct(t.prob)));
    card.appendChild(row);
  }
}

async function classify(file) {
  const card = $("div", "card"), img = $("img", "thumb");
  img.alt = file.name; img.src = URL.createObjectURL(file);
  const status = $("div", "status", "classifying...");
  card.append(img, $("div", "name", file.name), status);
  document.getElementById("cards").prepend(card);
  const fd = new FormData(); fd.append("files", file, file.name);
  try {
    const r = (await answer(await fetch("predict", {method: "POST", body: fd}))).predictions[0];
    status.replaceWith($("div", "label", r.label));
    if (r.unknown) card.appendChild($("div", "name", "unlike the training images (in_distribution " + r.in_distribution.toFixed(3) + ")"));
    card.appendChild($("div", "prob", pct(r.prob)));
    bars(card, r.top_k);
    const btn = $("button", "gradcam", "Grad-CAM");
    btn.onclick = () => explain(file, card, btn);
    card.appendChild(btn);
  } catch (e) { status.className = "error"; status.textContent = e.message; }
}

async function explain(file, card, btn) {
  btn.disabled = true; btn.textContent = "explaining...";
  const fd = new FormData(); fd.append("file", file, file.name);
  try {
    const r = await answer(await fetch("explain", {method: "POST", body: fd}));
    const o = $("img", "overlay"); o.alt = "Grad-CAM of " + r.label; o.src = r.overlay;
    btn.replaceWith(o);
  } catch (e) { btn.replaceWith($("div", "error", e.message)); }
}

const take = files => { for (const f of files) classify(f); };
const drop = document.getElementById("drop");
document.getElementById("files").addEventListener("change", e => { take(e.target.files); e.target.value = ""; });
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });
showMeta();
</script>
</body></html>
"""
