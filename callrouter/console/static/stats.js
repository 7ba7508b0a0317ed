/* The statistics page's charts: reads the numbers from <script type="application/json" id="stats-data">
   (data, not code: the CSP allows it) and draws each <div data-chart="..."> with uPlot. The same numbers
   are in the table under each chart. */
(function () {
  "use strict";
  var source = document.getElementById("stats-data");
  if (!source || typeof uPlot === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var labels = data.labels;
  var x = labels.map(function (_, i) { return i; });
  var HEIGHT = 220;
  var INK = "#616e7c", GRID = "#e4e7eb";

  function dayAxis() {
    return {
      stroke: INK, grid: { stroke: GRID }, ticks: { stroke: GRID }, space: 48,
      values: function (u, splits) {
        return splits.map(function (v) { return Number.isInteger(v) && labels[v] !== undefined ? labels[v] : ""; });
      }
    };
  }

  function valueAxis(scale, side, suffix) {
    return {
      scale: scale, side: side, stroke: INK, grid: { stroke: side === 1 ? "transparent" : GRID }, ticks: { stroke: GRID }, size: 50,
      values: function (u, splits) { return splits.map(function (v) { return v + (suffix || ""); }); }
    };
  }

  function bars(width) { return uPlot.paths.bars({ size: [width, 60], align: 0 }); }

  var specs = {
    calls: function () {
      return {
        series: [daySeries, { label: data.names.calls, stroke: "#7fb2ea", fill: "#b6d4f5", paths: bars(0.8), points: { show: false } },
                     { label: data.names.answered, stroke: "#1f7a4d", fill: "#2f9e62", paths: bars(0.45), points: { show: false } }],
        axes: [dayAxis(), valueAxis("y", 3)],
        scales: { x: { time: false, range: function () { return [-0.6, x.length - 0.4]; } }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } },
        values: [x, data.calls, data.answered]
      };
    },
    rate: function () {
      return {
        series: [daySeries, { label: data.names.rate, stroke: "#0b6bcb", width: 2, spanGaps: false, points: { show: true, size: 6, fill: "#0b6bcb" } }],
        axes: [dayAxis(), valueAxis("%", 3, "%")],
        scales: { x: { time: false, range: function () { return [-0.6, x.length - 0.4]; } }, "%": { range: [0, 100] } },
        seriesScales: ["%"],
        values: [x, data.rate]
      };
    },
    talk: function () {
      return {
        series: [daySeries, { label: data.names.talk, stroke: "#7fb2ea", fill: "#b6d4f5", paths: bars(0.7), points: { show: false } },
                     { label: data.names.avg, scale: "avg", stroke: "#b45309", width: 2, points: { show: true, size: 6, fill: "#b45309" } }],
        axes: [dayAxis(), valueAxis("y", 3), valueAxis("avg", 1)],
        scales: { x: { time: false, range: function () { return [-0.6, x.length - 0.4]; } }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } },
                  avg: { range: function (u, lo, hi) { return [0, Math.max(1, (hi || 0) * 1.2)]; } } },
        values: [x, data.talk, data.avg]
      };
    }
  };

  var daySeries = { label: data.names.day, value: function (u, v) { return v == null ? "" : (labels[v] || ""); } };

  var charts = [];
  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (el) {
    var make = specs[el.getAttribute("data-chart")];
    if (!make) { return; }
    var spec = make();
    if (spec.seriesScales) { spec.series[1].scale = spec.seriesScales[0]; }
    var opts = {
      width: Math.max(240, el.clientWidth), height: HEIGHT,
      series: spec.series, axes: spec.axes, scales: spec.scales,
      cursor: { points: { show: false } }, legend: { show: true }
    };
    charts.push({ el: el, plot: new uPlot(opts, spec.values, el) });
  });

  if (typeof ResizeObserver !== "undefined") {
    var ro = new ResizeObserver(function () {
      charts.forEach(function (c) {
        var w = Math.max(240, c.el.clientWidth);
        if (w !== c.plot.width) { c.plot.setSize({ width: w, height: HEIGHT }); }
      });
    });
    charts.forEach(function (c) { ro.observe(c.el); });
  }
})();
