/// The pool's live dashboard: one self-contained page (no CDN, no build step) that reads
/// `<its path>/snapshot` (mounted with it by `addPoolRoutes`) every second and draws it.
///
/// Every figure it shows has an `id` (`wait-p99-<lane>`, `utilization-p99`, `connections-leased`, …)
/// so that a test in a browser can read the page and compare it with `/pool/statistics`.
/// Text from the pool (lane names, call sites) goes in as text, never as markup.
enum PoolDashboard {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Lifeguard pool</title>
        <style>
        :root { --ink:#1d232b; --muted:#5b6673; --line:#d9dee4; --bg:#f6f7f9; --card:#fff;
                --ok:#1f8a4c; --warn:#b86e00; --bad:#c62828; --leased:#2f6fd6; --idle:#8fb8f2; --opening:#f0b429; --other:#9aa5b1; }
        * { box-sizing: border-box; }
        body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink); background:var(--bg); }
        header { display:flex; align-items:center; gap:16px; padding:14px 24px; background:var(--card); border-bottom:1px solid var(--line); }
        header h1 { font-size:18px; margin:0; }
        #state { padding:4px 12px; border-radius:999px; font-weight:700; color:#fff; background:var(--muted); }
        #state.ok { background:var(--ok); } #state.warn { background:var(--warn); } #state.bad { background:var(--bad); }
        #updated { color:var(--muted); margin-left:auto; }
        main { padding:16px 24px; display:grid; grid-template-columns:repeat(12, 1fr); gap:16px; }
        section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px; min-width:0; }
        section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:0 0 8px; }
        .tiles { grid-column:span 12; display:grid; grid-template-columns:repeat(5, 1fr); gap:16px; padding:0; background:none; border:0; }
        .tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
        .tile .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
        .tile .value { font-size:30px; font-weight:700; font-variant-numeric:tabular-nums; }
        .tile .sub { color:var(--muted); font-size:12px; }
        .good { color:var(--ok); } .warning { color:var(--warn); } .critical { color:var(--bad); }
        .wide { grid-column:span 8; } .narrow { grid-column:span 4; } .half { grid-column:span 6; } .full { grid-column:span 12; }
        table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
        th, td { text-align:right; padding:4px 6px; border-bottom:1px solid var(--line); white-space:nowrap; }
        th:first-child, td:first-child { text-align:left; }
        th { color:var(--muted); font-weight:600; font-size:12px; }
        svg { width:100%; display:block; }
        .legend span { display:inline-block; margin-right:12px; font-size:12px; color:var(--muted); }
        .legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; vertical-align:-1px; }
        ul { margin:0; padding-left:18px; } li { margin:2px 0; }
        .empty { color:var(--muted); }
        code { font-size:12px; }
        </style>
        </head>
        <body>
        <header>
          <h1>Lifeguard pool</h1>
          <span id="state">connecting…</span>
          <span id="updated"></span>
        </header>
        <main>
          <div class="tiles">
            <div class="tile"><div class="label">Wait p99, worst lane</div><div class="value" id="wait-p99-worst">–</div><div class="sub" id="wait-p99-worst-lane">incident above 50 ms</div></div>
            <div class="tile"><div class="label">Utilization p99</div><div class="value" id="utilization-p99">–</div><div class="sub">of the budget, time-weighted</div></div>
            <div class="tile"><div class="label">Connections leased</div><div class="value" id="connections-leased">–</div><div class="sub" id="connections-summary"></div></div>
            <div class="tile"><div class="label">Waiting now</div><div class="value" id="waiters">–</div><div class="sub" id="waiters-lanes"></div></div>
            <div class="tile"><div class="label">Rejected in window</div><div class="value" id="rejected">–</div><div class="sub" id="rejected-share"></div></div>
          </div>
          <section class="wide"><h2>Pool wait p99 by lane (ms), last 2 minutes</h2><svg id="wait-chart" viewBox="0 0 800 220" role="img" aria-label="wait p99 by lane over time"></svg><div class="legend" id="wait-legend"></div></section>
          <section class="narrow"><h2>Connections by state</h2><svg id="connections-chart" viewBox="0 0 400 90" role="img" aria-label="connections by state"></svg><div class="legend" id="connections-legend"></div>
            <h2 style="margin-top:14px">Utilization p99, last 2 minutes</h2><svg id="utilization-chart" viewBox="0 0 400 90" role="img" aria-label="utilization p99 over time"></svg></section>
          <section class="full"><h2>Lanes (statistics window: <span id="window-seconds">–</span> s)</h2>
            <table id="lanes"><thead><tr><th>lane</th><th>leased / limit</th><th>waiting</th><th>arrivals/s</th><th>wait p50</th><th>wait p99</th><th>hold p50</th><th>hold p99</th><th>granted</th><th>timeout</th><th>shed</th><th>overloaded</th><th>deadline</th><th>unavailable</th><th>cancelled</th><th>state</th></tr></thead><tbody></tbody></table></section>
          <section class="half"><h2>Hold time (all lanes, in window)</h2><svg id="hold-chart" viewBox="0 0 600 200" role="img" aria-label="hold-time histogram"></svg></section>
          <section class="half"><h2>Generation holds (a connection held across a model call)</h2><div id="generation-holds"></div></section>
          <section class="half"><h2>Incidents and leak signal</h2><div id="incidents"></div></section>
          <section class="half"><h2>Sizing advice</h2><div id="advice"></div></section>
        </main>
        <script>
        "use strict";
        const colors = ["#2f6fd6", "#d6542f", "#1f8a4c", "#8e44ad", "#b86e00", "#00838f"];
        const history = [];           // {t, lanes: {name: waitP99}, utilization}
        const historySeconds = 120;
        const $ = (id) => document.getElementById(id);
        const svgNS = "http://www.w3.org/2000/svg";
        function el(tag, attrs, ...children) {
          const node = tag.startsWith("svg:") ? document.createElementNS(svgNS, tag.slice(4)) : document.createElement(tag);
          for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
          for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
          return node;
        }
        function ms(value) { return value >= 1000 ? (value / 1000).toFixed(2) + " s" : value >= 10 ? value.toFixed(0) + " ms" : value.toFixed(1) + " ms"; }
        function level(waitMs) { return waitMs > 500 ? "critical" : waitMs > 50 ? "warning" : "good"; }
        function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
        function rejectedOf(o) { return o.timeout + o.shed + o.overloaded + o.deadlineExceeded + o.unavailable; }

        function lineChart(svg, series, options) {
          clear(svg);
          const [width, height] = [svg.viewBox.baseVal.width, svg.viewBox.baseVal.height];
          const left = 44, right = 8, top = 8, bottom = 20;
          const now = Date.now() / 1000;
          let maxValue = options.floor;
          for (const s of series) for (const p of s.points) maxValue = Math.max(maxValue, Math.min(p.v, options.cap));
          maxValue *= 1.1;
          const x = (t) => left + (width - left - right) * (1 - (now - t) / historySeconds);
          const y = (v) => top + (height - top - bottom) * (1 - Math.min(v, options.cap) / maxValue);
          for (const tick of options.ticks(maxValue)) {
            svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), stroke: "#eef1f4" }));
            svg.append(el("svg:text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6673" }, options.label(tick)));
          }
          for (const line of options.lines || []) {
            if (line.value > maxValue) continue;
            svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(line.value), y2: y(line.value), stroke: line.color, "stroke-dasharray": "6 4", "stroke-width": 1.5 }));
            svg.append(el("svg:text", { x: width - right - 4, y: y(line.value) - 4, "text-anchor": "end", "font-size": 11, fill: line.color }, line.text));
          }
          svg.append(el("svg:text", { x: left, y: height - 4, "font-size": 11, fill: "#5b6673" }, "−2 min"));
          svg.append(el("svg:text", { x: width - right, y: height - 4, "text-anchor": "end", "font-size": 11, fill: "#5b6673" }, "now"));
          series.forEach((s) => {
            if (s.points.length === 0) return;
            const d = s.points.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.v).toFixed(1)).join(" ");
            svg.append(el("svg:path", { d, fill: "none", stroke: s.color, "stroke-width": 2 }));
            for (const p of s.points) if (p.v > options.cap) svg.append(el("svg:text", { x: x(p.t), y: top + 10, "text-anchor": "middle", "font-size": 11, fill: s.color }, "▲"));
          });
        }

        function drawConnections(c) {
          const svg = clear($("connections-chart"));
          const states = [["leased", c.leased, "var(--leased)"], ["idle", c.idle, "var(--idle)"], ["opening", c.opening, "var(--opening)"], ["other", c.other, "var(--other)"]];
          const width = 400, budget = Math.max(1, c.budget);
          let at = 0;
          svg.append(el("svg:rect", { x: 0, y: 10, width, height: 40, fill: "#eef1f4", rx: 4 }));
          for (const [name, count, color] of states) {
            if (count <= 0) continue;
            const w = width * count / budget;
            svg.append(el("svg:rect", { x: at, y: 10, width: w, height: 40, fill: color }));
            if (w > 22) svg.append(el("svg:text", { x: at + w / 2, y: 35, "text-anchor": "middle", "font-size": 13, fill: "#fff", "font-weight": 700 }, count));
            at += w;
          }
          svg.append(el("svg:text", { x: 0, y: 70, "font-size": 12, fill: "#5b6673" }, (c.leased + c.idle + c.opening + c.other) + " open of a budget of " + c.budget));
          const legend = clear($("connections-legend"));
          for (const [name, count, color] of states) legend.append(el("span", {}, el("i", { style: "background:" + color }), name + " " + count));
        }

        function drawHolds(distribution) {
          const svg = clear($("hold-chart"));
          const bins = distribution.bins || [];
          if (bins.length === 0 || distribution.count === 0) { svg.append(el("svg:text", { x: 10, y: 30, fill: "#5b6673" }, "no leases in the window")); return; }
          const [width, height] = [600, 200], left = 46, bottom = 46, top = 10;
          const maxCount = Math.max(...bins.map((b) => b.count), 1);
          const w = (width - left) / bins.length;
          svg.append(el("svg:text", { x: left - 6, y: top + 10, "text-anchor": "end", "font-size": 11, fill: "#5b6673" }, maxCount >= 10000 ? Math.round(maxCount / 1000) + "k" : maxCount));
          svg.append(el("svg:text", { x: left - 6, y: height - bottom, "text-anchor": "end", "font-size": 11, fill: "#5b6673" }, 0));
          bins.forEach((b, i) => {
            const h = (height - top - bottom) * b.count / maxCount;
            const bound = b.upToMilliseconds;   // absent for the last bin, which has no bound
            const long = bound == null || bound > 1000;
            svg.append(el("svg:rect", { x: left + i * w + 2, y: height - bottom - h, width: w - 4, height: Math.max(h, b.count > 0 ? 1 : 0), fill: long ? "var(--bad)" : "var(--leased)" }));
            const label = bound == null ? "more" : bound >= 1000 ? (bound / 1000) + " s" : bound + (i === 0 ? " ms" : "");
            // Upper bounds, on two rows so that they do not overlap.
            svg.append(el("svg:text", { x: left + i * w + w / 2, y: height - bottom + 13 + (i % 2) * 11, "text-anchor": "middle", "font-size": 10, fill: "#5b6673" }, label));
          });
          svg.append(el("svg:text", { x: left, y: height - 4, "font-size": 11, fill: "#5b6673" }, "p50 " + ms(distribution.p50) + " · p99 " + ms(distribution.p99) + " · max " + ms(distribution.max) + " · " + distribution.count + " leases · red: over 1 s"));
        }

        function list(container, items, empty) {
          clear(container);
          if (items.length === 0) { container.append(el("p", { class: "empty" }, empty)); return; }
          const ul = el("ul");
          for (const item of items) ul.append(item);
          container.append(ul);
        }

        function draw(snapshot) {
          const s = snapshot.statistics;
          const now = snapshot.takenAt;
          // Tiles
          let worst = null;
          for (const lane of s.lanes) if (lane.wait.count > 0 && (worst === null || lane.wait.p99 > worst.wait.p99)) worst = lane;
          const worstValue = worst ? worst.wait.p99 : 0;
          $("wait-p99-worst").textContent = ms(worstValue);
          $("wait-p99-worst").className = "value " + level(worstValue);
          $("wait-p99-worst-lane").textContent = worst ? worst.lane + " · incident above 50 ms" : "no waits yet · incident above 50 ms";
          $("utilization-p99").textContent = Math.round(s.utilizationP99 * 100) + "%";
          $("utilization-p99").className = "value " + (s.utilizationP99 >= 0.95 ? "warning" : "good");
          const c = snapshot.connections;
          $("connections-leased").textContent = c.leased + " / " + c.budget;
          $("connections-summary").textContent = c.idle + " idle · " + c.opening + " opening · " + c.other + " other";
          $("waiters").textContent = snapshot.waiters;
          $("waiters-lanes").textContent = snapshot.lanes.filter((l) => l.waiters > 0).map((l) => l.lane + " " + l.waiters).join(" · ") || "no queue";
          const rejected = rejectedOf(s.outcomes);
          const asked = rejected + s.outcomes.granted;
          $("rejected").textContent = rejected;
          $("rejected").className = "value " + (rejected > 0 ? "warning" : "good");
          $("rejected-share").textContent = asked > 0 ? (100 * rejected / asked).toFixed(2) + "% of " + asked + " leases asked" : "nothing asked yet";
          $("window-seconds").textContent = s.windowSeconds.toFixed(0);

          // State
          const state = $("state");
          const overloaded = snapshot.lanes.filter((l) => l.isOverloaded).map((l) => l.lane);
          const leak = s.incidents.some((i) => i.kind === "leakSignal");
          if (!snapshot.isDatabaseAvailable) { state.textContent = "database unavailable"; state.className = "bad"; }
          else if (snapshot.isShuttingDown) { state.textContent = "shutting down"; state.className = "warn"; }
          else if (overloaded.length > 0) { state.textContent = "overloaded: " + overloaded.join(", "); state.className = "bad"; }
          else if (worstValue > snapshot.incidentWaitMilliseconds || leak) { state.textContent = leak ? "leak signal" : "slow waits"; state.className = "warn"; }
          else { state.textContent = "healthy"; state.className = "ok"; }
          $("updated").textContent = "updated " + new Date(now * 1000).toLocaleTimeString();

          // History
          const point = { t: now, lanes: {}, utilization: s.utilizationP99 };
          for (const lane of s.lanes) point.lanes[lane.lane] = lane.wait.p99;
          history.push(point);
          while (history.length > 0 && history[0].t < now - historySeconds) history.shift();
          const names = s.lanes.map((l) => l.lane);
          const series = names.map((name, i) => ({ name, color: colors[i % colors.length], points: history.filter((p) => name in p.lanes).map((p) => ({ t: p.t, v: p.lanes[name] })) }));
          lineChart($("wait-chart"), series, {
            floor: 60, cap: 1000, ticks: (m) => [0, 50, 100, 250, 500, 1000].filter((t) => t <= m), label: (t) => t,
            lines: [{ value: snapshot.incidentWaitMilliseconds, color: "#b86e00", text: snapshot.incidentWaitMilliseconds + " ms: incident" }]
              .concat([...new Set(snapshot.lanes.map((l) => l.waitTimeoutMilliseconds))].map((budget) => ({ value: budget, color: "#c62828",
                text: budget + " ms: waitTimeout of " + snapshot.lanes.filter((l) => l.waitTimeoutMilliseconds === budget).map((l) => l.lane).join(", ") }))) });
          const legend = clear($("wait-legend"));
          series.forEach((s) => legend.append(el("span", {}, el("i", { style: "background:" + s.color }), s.name)));
          lineChart($("utilization-chart"), [{ color: "#2f6fd6", points: history.map((p) => ({ t: p.t, v: p.utilization * 100 })) }], {
            floor: 100, cap: 100, ticks: () => [0, 50, 100], label: (t) => t + "%" });
          drawConnections(c);

          // Lanes table
          const body = clear($("lanes").tBodies[0]);
          const now_ = Object.fromEntries(snapshot.lanes.map((l) => [l.lane, l]));
          for (const lane of s.lanes) {
            const live = now_[lane.lane] || { leased: 0, limit: 0, waiters: 0, isOverloaded: false };
            const o = lane.outcomes;
            const cell = (text, id, cls) => el("td", Object.assign(id ? { id } : {}, cls ? { class: cls } : {}), text);
            body.append(el("tr", {},
              cell(lane.lane), cell(live.leased + " / " + live.limit), cell(live.waiters, "waiters-" + lane.lane),
              cell(lane.arrivalsPerSecond.toFixed(1)),
              cell(ms(lane.wait.p50), "wait-p50-" + lane.lane), cell(ms(lane.wait.p99), "wait-p99-" + lane.lane, level(lane.wait.p99)),
              cell(ms(lane.hold.p50), "hold-p50-" + lane.lane), cell(ms(lane.hold.p99), "hold-p99-" + lane.lane),
              cell(o.granted, "granted-" + lane.lane), cell(o.timeout), cell(o.shed), cell(o.overloaded), cell(o.deadlineExceeded), cell(o.unavailable), cell(o.cancelled),
              !snapshot.isDatabaseAvailable ? cell("database unavailable", "state-" + lane.lane, "critical")
                : cell(live.isOverloaded ? "overloaded" : "ok", "state-" + lane.lane, live.isOverloaded ? "critical" : "good")));
          }
          drawHolds(s.hold);

          // Generation holds, incidents, advice
          const holds = s.findings.filter((f) => f.kind === "generationHold" || f.kind === "leaseDuringGeneration");
          list($("generation-holds"), holds.slice(-8).reverse().map((f) => el("li", {},
            el("code", {}, f.callSite), " " + f.function + " · lane " + f.lane + " · held " + f.heldSeconds.toFixed(1) + " s" + (f.idleSeconds != null ? ", idle " + f.idleSeconds.toFixed(1) + " s" : ""))),
            "none: no connection was held across a model call");
          list($("incidents"), s.incidents.slice(-8).reverse().map((i) => el("li", { class: i.kind === "leakSignal" ? "critical" : "warning" },
            i.kind === "leakSignal" ? "leak signal: usable connections fell to " + i.capacity + " while " + i.cancellations + " leases were cancelled"
              : "slow waits on " + i.lane + ": p99 " + ms(i.waitP99Milliseconds || 0) + (i.topCallSites.length ? "; most connection time held at " + i.topCallSites.slice(0, 3).join(", ") : ""))),
            "none in the window");
          const advice = snapshot.advice;
          const adviceItems = advice.warnings.map((w) => el("li", { class: "warning" }, w))
            .concat(advice.lanes.map((l) => el("li", {}, l.reasoning)));
          adviceItems.push(el("li", {}, "advised budget: " + advice.budget + " (now " + c.budget + ")"));
          list($("advice"), adviceItems, "no advice yet");
        }

        async function refresh() {
          try {
            const response = await fetch(location.pathname.replace(/\/$/, "") + "/snapshot", { cache: "no-store" });
            if (!response.ok) throw new Error("HTTP " + response.status);
            draw(await response.json());
          } catch (error) {
            $("state").textContent = "no data: " + error.message;
            $("state").className = "bad";
          }
        }
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body>
        </html>
        """#
}
