// cnnzoo report: the chart's filters and tooltip, sortable tables, the layer table's roll-up levels.
// No library and no network: everything shown is already in the page (figures in data- attributes, the layer
// table as JSON in a <script type="application/json">).
"use strict";

(function () {
  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  // --- the complexity chart ------------------------------------------------------------------------------
  function initChart(box) {
    var form = box.querySelector("form.filters");
    var tip = box.querySelector(".tooltip");
    var shown = box.querySelector(".shown");

    function checked(name) {
      return all("input[name=" + name + "]:checked", form).map(function (i) { return i.value; });
    }

    function update() {
      var dataset = checked("dataset")[0], metric = checked("metric")[0];
      var families = checked("family"), lectureOnly = checked("lecture").length > 0;
      var visible = null;
      all("figure.chart", box).forEach(function (f) {
        var on = f.dataset.dataset === dataset && f.dataset.metric === metric;
        f.hidden = !on;
        if (on) visible = f;
      });
      all("[data-family]", box).forEach(function (el) {
        if (el.tagName === "INPUT") return;
        var off = families.indexOf(el.dataset.family) < 0 || (lectureOnly && el.dataset.lecture !== "1");
        el.classList.toggle("off", off);
      });
      var n = visible ? all("a:not(.off) .bubble", visible).length : 0;
      shown.textContent = n + (n === 1 ? " model" : " models") + " shown";
      hide();
    }

    function show(bubble) {
      var d = bubble.dataset;
      tip.replaceChildren();
      var title = document.createElement("strong");
      title.textContent = d.name;
      tip.append(title, " (" + d.family + ", " + d.dataset + ")");
      [["parameters", d.params], ["MACs", d.macs], ["activations", d.activations],
       [d.metric + " error", d.error + "%" + (d.paper === "1" ? "" : " (not the paper's figure)")],
       ["source", d.source]].forEach(function (pair) {
        var line = document.createElement("div");
        var key = document.createElement("span");
        key.className = "key";
        key.textContent = pair[0] + " ";
        line.append(key, pair[1]);
        tip.append(line);
      });
      tip.hidden = false;
      var r = bubble.getBoundingClientRect(), t = tip.getBoundingClientRect();
      var left = r.right + 10, top = r.top + r.height / 2 - t.height / 2;
      if (left + t.width > window.innerWidth - 8) left = r.left - t.width - 10;
      tip.style.left = Math.max(8, left) + "px";
      tip.style.top = Math.max(8, Math.min(top, window.innerHeight - t.height - 8)) + "px";
    }

    function hide() {
      tip.hidden = true;
    }

    form.addEventListener("change", update);
    form.querySelector("button.all").addEventListener("click", function () {
      all("input[name=family]", form).forEach(function (i) { i.checked = true; });
      update();
    });
    form.querySelector("button.none").addEventListener("click", function () {
      all("input[name=family]", form).forEach(function (i) { i.checked = false; });
      update();
    });
    box.addEventListener("mouseover", function (e) {
      var b = e.target.closest && e.target.closest(".bubble");
      if (b) show(b);
    });
    box.addEventListener("mouseout", function (e) {
      if (e.target.closest && e.target.closest(".bubble")) hide();
    });
    box.addEventListener("focusin", function (e) {
      var b = e.target.querySelector && e.target.querySelector(".bubble");
      if (b) show(b);
    });
    box.addEventListener("focusout", hide);
    update();
  }

  // --- sortable tables -----------------------------------------------------------------------------------
  function initSort(table) {
    var heads = all("thead th", table);
    heads.forEach(function (th, column) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = th.dataset.type === "num";
        var body = table.tBodies[0];
        var rows = all("tr", body);
        function key(row) {
          var text = row.cells[column].dataset.sort;
          if (text === "") return null; // no value: always last
          return numeric ? parseFloat(text) : text.toLowerCase();
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x === null || y === null) return (x === null) - (y === null);
          var order = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  // --- the layer table's roll-up levels ------------------------------------------------------------------
  function initLayers(box) {
    var data = JSON.parse(box.querySelector("script.layer-data").textContent);
    var body = box.querySelector("table.layer-table tbody");
    var buttons = all(".levels button", box);

    function render(level) {
      var fragment = document.createDocumentFragment();
      data.levels[level].rows.forEach(function (cells) {
        var tr = document.createElement("tr");
        cells.forEach(function (cell) {
          var td = document.createElement("td");
          td.textContent = cell;
          tr.appendChild(td);
        });
        fragment.appendChild(tr);
      });
      body.replaceChildren(fragment);
      buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.level === String(level))); });
    }

    buttons.forEach(function (b) {
      b.addEventListener("click", function () { render(Number(b.dataset.level)); });
    });
    render(0);
  }

  function start() {
    all("section.chart-box").forEach(initChart);
    all("table.sortable").forEach(initSort);
    all("section.layers").forEach(initLayers);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
