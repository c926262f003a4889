/* grand-engine explorer: draws the masks and boxes of one image on a canvas over the picture.
 *
 * The page embeds its data as JSON (<script id="grand-data">): image size and, per object, id, kind
 * (object | floating), colour, box and COCO compressed RLE counts. Everything runs from file:// with no
 * server and no network. window.grandExplorer exposes the state for tests and the browser console.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("grand-data").textContent);
  var W = data.width, H = data.height;
  var canvas = document.getElementById("overlay");
  var ctx = canvas.getContext("2d", { willReadFrequently: true });
  canvas.width = W;
  canvas.height = H;

  var state = {
    masks: true, boxes: true, labels: true, floating: true, opacity: 0.45,
    hidden: {},    // id -> true when the object's own toggle is off
    hover: null,   // ids under the pointer (phrase, chip or table row)
    focus: null,   // ids pinned by a click
  };

  // COCO compressed RLE string -> run lengths (pycocotools rleFrString), arithmetic kept within doubles.
  function runLengths(s) {
    var counts = [], p = 0;
    while (p < s.length) {
      var x = 0, k = 0, c;
      do {
        c = s.charCodeAt(p++) - 48;
        x += (c & 0x1f) * Math.pow(32, k);
        k++;
      } while ((c & 0x20) && p < s.length);
      if (c & 0x10) x -= Math.pow(32, k);
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  // Row-major pixel indices of a mask (RLE runs are column-major: index i is row i % H of column i / H).
  function maskPixels(counts) {
    var total = 0, i, r;
    for (i = 1; i < counts.length; i += 2) total += counts[i];
    var out = new Uint32Array(total), n = 0, pos = 0;
    for (i = 0; i < counts.length; i++) {
      if (i % 2 === 1) {
        for (r = 0; r < counts[i]; r++) {
          var j = pos + r;
          out[n++] = (j % H) * W + Math.floor(j / H);
        }
      }
      pos += counts[i];
    }
    return out;
  }

  var objects = data.objects;
  objects.forEach(function (o) { o.pixels = o.rle ? maskPixels(runLengths(o.rle)) : null; });
  // Big masks first so that small ones stay visible on top.
  var drawOrder = objects.slice().sort(function (a, b) {
    return (b.pixels ? b.pixels.length : 0) - (a.pixels ? a.pixels.length : 0);
  });

  function rgb(hex) {
    return [parseInt(hex.substr(1, 2), 16), parseInt(hex.substr(3, 2), 16), parseInt(hex.substr(5, 2), 16)];
  }

  function visible(o) {
    return !state.hidden[o.id] && (o.kind !== "floating" || state.floating);
  }

  function emphasis() {
    return state.hover || state.focus;
  }

  function draw() {
    var image = ctx.createImageData(W, H), px = image.data;
    var em = emphasis();
    if (state.masks) {
      drawOrder.forEach(function (o) {
        if (!o.pixels || !visible(o)) return;
        var a = state.opacity;
        if (em) a = em.indexOf(o.id) >= 0 ? Math.max(0.7, state.opacity) : 0.06;
        var c = rgb(o.color), alpha = Math.round(a * 255), p = o.pixels;
        for (var i = 0; i < p.length; i++) {
          var q = p[i] * 4;
          px[q] = c[0]; px[q + 1] = c[1]; px[q + 2] = c[2]; px[q + 3] = alpha;
        }
      });
    }
    ctx.putImageData(image, 0, 0);
    if (state.boxes) {
      var lw = Math.max(2, Math.round(Math.max(W, H) / 320));
      ctx.lineWidth = lw;
      ctx.font = Math.max(11, Math.round(Math.max(W, H) / 55)) + "px sans-serif";
      ctx.textBaseline = "top";
      objects.forEach(function (o) {
        if (!o.bbox || !visible(o)) return;
        if (em && em.indexOf(o.id) < 0) return;
        var b = o.bbox;
        ctx.strokeStyle = o.color;
        ctx.setLineDash(o.kind === "floating" ? [3 * lw, 2 * lw] : []);
        ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
        if (state.labels) {
          var text = o.id + " " + o.label;
          var tw = ctx.measureText(text).width + 6, th = parseInt(ctx.font, 10) + 4;
          ctx.fillStyle = o.color;
          ctx.fillRect(b[0], Math.max(0, b[1] - th), tw, th);
          ctx.fillStyle = "#000";
          ctx.fillText(text, b[0] + 3, Math.max(0, b[1] - th) + 2);
        }
      });
      ctx.setLineDash([]);
    }
    markActive();
  }

  function idsOf(el) {
    var v = el.getAttribute("data-ids");
    return v ? v.split(" ").filter(Boolean).map(Number) : [];
  }

  function markActive() {
    var em = emphasis();
    document.querySelectorAll("[data-ids]").forEach(function (el) {
      var ids = idsOf(el);
      var on = !!em && ids.length > 0 && ids.every(function (i) { return em.indexOf(i) >= 0; });
      el.classList.toggle(el.tagName === "TR" ? "hl" : "active", on);
    });
  }

  function bindToggle(id, key) {
    var el = document.getElementById(id);
    if (!el) return;
    el.checked = state[key];
    el.addEventListener("change", function () { state[key] = el.checked; draw(); });
  }
  bindToggle("toggle-masks", "masks");
  bindToggle("toggle-boxes", "boxes");
  bindToggle("toggle-labels", "labels");
  bindToggle("toggle-floating", "floating");
  var opacity = document.getElementById("opacity");
  if (opacity) {
    opacity.value = String(state.opacity);
    opacity.addEventListener("input", function () { state.opacity = parseFloat(opacity.value); draw(); });
  }
  document.querySelectorAll("input.object-toggle").forEach(function (el) {
    el.addEventListener("change", function () {
      var id = Number(el.getAttribute("data-id"));
      if (el.checked) delete state.hidden[id]; else state.hidden[id] = true;
      draw();
    });
  });
  document.querySelectorAll("[data-ids]").forEach(function (el) {
    el.addEventListener("mouseenter", function () { state.hover = idsOf(el); draw(); });
    el.addEventListener("mouseleave", function () { state.hover = null; draw(); });
    if (el.tagName === "INPUT") return;
    el.addEventListener("click", function (ev) {
      if (ev.target.tagName === "INPUT") return;
      var ids = idsOf(el);
      state.focus = state.focus && state.focus.join(" ") === ids.join(" ") ? null : ids;
      draw();
    });
  });

  function paintedPixels() {
    var px = ctx.getImageData(0, 0, W, H).data, n = 0;
    for (var i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
    return n;
  }

  window.grandExplorer = {
    state: state,
    draw: draw,
    paintedPixels: paintedPixels,
    alphaAt: function (x, y) { return ctx.getImageData(x, y, 1, 1).data[3]; },
    maskLayers: objects.filter(function (o) { return !!o.pixels; }).length,
    maskPixels: function (id) {
      var o = objects.filter(function (x) { return x.id === id; })[0];
      return o && o.pixels ? o.pixels.length : 0;
    },
  };
  draw();
  document.body.setAttribute("data-explorer-ready", "1");
})();
