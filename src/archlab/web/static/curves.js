// arch ui: interactive learning curves with uPlot (static/vendor/uplot), from the JSON endpoint.
//
// Every element with class "curves" and data-runs="ID[,ID...]" gets one chart per metric family
// (val_loss and train_loss -> "loss", val_acc -> "acc"), one series per run and metric, x the
// step; a series is labelled "RUN METRIC" when several runs share the charts (data-labels="A,B"
// gives the runs other names, such as "fold 0,fold 1"). After drawing, each chart's container
// carries data-series="N" (the series drawn) and data-metric="FAMILY". With data-live="1" the
// element polls /api/runs/ID/metrics every 2 s while a run's status is "running" and redraws
// in place; the status badge #run-status follows.
(function () {
  "use strict";
  var PREFIXES = ["train_", "val_", "eval_", "test_"];
  var COLOURS = ["#2459a8", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#e67700"];

  function family(name) {
    for (var i = 0; i < PREFIXES.length; i++) {
      if (name.indexOf(PREFIXES[i]) === 0) return name.slice(PREFIXES[i].length);
    }
    return name;
  }

  // tick labels to three significant digits (uPlot's default rounds small values like lr to 0)
  function ticks(u, values) {
    return values.map(function (v) { return v == null ? "" : String(Number(v.toPrecision(3))); });
  }

  function number(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  // runs: [{run, status, metrics: {name: {step, epoch, value}}}] -> {family: [{label, step, value}]}
  // (archlab.web.charts gives the same labels in the JSON endpoints)
  function families(runs, names) {
    var out = {};
    runs.forEach(function (doc, i) {
      Object.keys(doc.metrics).sort().forEach(function (name) {
        var s = doc.metrics[name];
        var label = runs.length > 1 ? (names[i] || doc.run) + " " + name : name;
        (out[family(name)] = out[family(name)] || []).push({ label: label, step: s.step, value: s.value });
      });
    });
    return out;
  }

  // uPlot wants one shared x: the union of the steps, null where a series has no point
  function aligned(series) {
    var steps = {};
    series.forEach(function (s) { s.step.forEach(function (x) { steps[x] = true; }); });
    var xs = Object.keys(steps).map(Number).sort(function (a, b) { return a - b; });
    var data = [xs];
    series.forEach(function (s) {
      var at = {};
      s.step.forEach(function (x, i) { at[x] = number(s.value[i]); });
      data.push(xs.map(function (x) { return x in at ? at[x] : null; }));
    });
    return data;
  }

  function draw(box, runs) {
    var width = Math.max(320, Math.min(560, box.clientWidth / 2 - 24));
    var names = (box.getAttribute("data-labels") || "").split(",");
    var groups = families(runs, names);
    box.querySelectorAll(".chart").forEach(function (el) { el.remove(); });
    Object.keys(groups).sort().forEach(function (name) {
      var series = groups[name];
      var holder = document.createElement("div");
      holder.className = "chart";
      holder.setAttribute("data-metric", name);
      var title = document.createElement("h3");
      title.textContent = name;
      holder.appendChild(title);
      box.appendChild(holder);
      var opts = {
        width: width,
        height: 240,
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { values: ticks, size: 60 }],
        series: [{ label: "step" }].concat(series.map(function (s, i) {
          return { label: s.label, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true };
        })),
      };
      new uPlot(opts, aligned(series), holder);
      holder.setAttribute("data-series", String(series.length));
    });
    box.setAttribute("data-drawn", "1");
  }

  function fetchRun(id) {
    return fetch("/api/runs/" + encodeURIComponent(id) + "/metrics", { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function load(box) {
    var ids = (box.getAttribute("data-runs") || "").split(",").filter(Boolean);
    Promise.all(ids.map(fetchRun)).then(function (runs) {
      draw(box, runs);
      var running = runs.some(function (d) { return d.status === "running"; });
      var badge = document.getElementById("run-status");
      if (badge && runs.length === 1) {
        badge.textContent = runs[0].status;
        badge.className = "status " + runs[0].status;
      }
      if (box.getAttribute("data-live") === "1" && running) {
        setTimeout(function () { load(box); }, 2000);
      }
    }).catch(function (err) {
      box.setAttribute("data-error", String(err));
    });
  }

  document.querySelectorAll(".curves[data-runs]").forEach(load);
})();
