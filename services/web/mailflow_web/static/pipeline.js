// The pipeline page, live: server-sent events from /admin/pipeline/events update the figures each
// second; every fifth event carries the last hour (60 per-minute points) and redraws the chart.
"use strict";
(() => {
  const chart = document.getElementById("chart");
  let minutes = [];
  const NS = "http://www.w3.org/2000/svg";

  function draw() {
    while (chart.firstChild) chart.removeChild(chart.firstChild);
    const W = 600, H = 170, n = minutes.length;
    if (!n) return;
    for (let k = 0; k < 3; k++) {
      const vals = minutes.map((m) => m[k]).filter((v) => v !== null);
      const max = Math.max(0.001, ...vals);
      const pts = [];
      minutes.forEach((m, i) => {
        if (m[k] === null) return;
        pts.push(`${(i * W / (n - 1 || 1)).toFixed(1)},${(H - (m[k] / max) * (H - 12) + 2).toFixed(1)}`);
      });
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("class", "l" + k);
      chart.appendChild(line);
      const label = document.createElementNS(NS, "text");
      label.setAttribute("x", 4 + k * 170);
      label.setAttribute("y", 12);
      label.textContent = ["in/s", "delivered/s", "latency s"][k] + " max " + max.toFixed(2);
      chart.appendChild(label);
    }
  }

  function update(s) {
    document.getElementById("updated").textContent = "as of " + s.at;
    for (const st of s.stages) {
      const box = document.querySelector(`.stage[data-step="${st.step}"]`);
      if (!box) continue;
      box.querySelector('[data-field="rate"]').textContent = st.rate;
      box.querySelector('[data-field="errors"]').textContent = Math.round(st.errors);
      box.querySelector('[data-field="health"]').className = "replica" + (st.ready ? " up" : "");
      box.querySelector('[data-field="health-text"]').textContent = st.ready ? "ready" : st.up ? "up, not ready" : "down";
      box.querySelector('[data-field="version"]').textContent = st.version;
      const reps = box.querySelector('[data-field="replicas"]');
      reps.replaceChildren(...st.replicas.map((r) => {
        const dot = document.createElement("span");
        dot.className = "replica" + (r.ready ? " up" : "") + (r.stale ? " stale" : "");
        dot.title = r.instance + (r.stale ? " (not heard from lately)" : r.ready ? " (ready)" : " (not ready)");
        return dot;
      }));
      reps.prepend(document.createTextNode(st.replicas.length + " replica" + (st.replicas.length === 1 ? "" : "s") + " "));
    }
    const depth = document.getElementById("depth");
    for (const [state, n] of Object.entries((s.counts || {}).states || {})) {
      let b = depth.querySelector(`[data-state="${state}"]`);
      if (!b) {
        const a = document.createElement("a");
        a.href = "/admin/queue?state=" + encodeURIComponent(state);
        a.append(state + " ");
        b = document.createElement("b");
        b.dataset.state = state;
        a.append(b);
        depth.insertBefore(a, depth.firstChild);
        depth.insertBefore(document.createTextNode(" "), a.nextSibling);
      }
      b.textContent = n;
    }
    document.getElementById("latency").textContent = s.latency_s === null ? "—" : s.latency_s;
    if (s.history) {
      minutes = s.history.minutes;
      draw();
    }
  }

  const source = new EventSource("/admin/pipeline/events");
  source.onmessage = (e) => update(JSON.parse(e.data));
})();
