"""Render bench/README.md (tables, targets) and bench/results/serving.png from bench/results/results.jsonl.

For each kind of benchmark the latest session that ran it is shown; older figures stay in the results file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, RESULTS_DIR, median, read_results

README = BENCH_DIR / "README.md"
PLOT = RESULTS_DIR / "serving.png"
OPENLOOP_PLOT = RESULTS_DIR / "openloop.png"
# The serving ratios: against the original as its users run it, its lighter reproduction and mlflow serve.
BASELINES = {"original_faithful": "vs_faithful", "original_light": "vs_light", "mlflow": "vs_mlflow"}

LABELS = {
    "ours": "ours (serving, sync workers, storage on)",
    "ours_gthread": "ours, GUNICORN_THREADS=4",
    "ours_nostore": "ours, STORE_PREDICTIONS=false",
    "floor_flask": "floor: Flask, JSON in/out, no work",
    "floor_wsgi": "floor: bare WSGI, no framework",
    "floor_flask_gthread": "floor: Flask, GUNICORN_THREADS=4",
    "floor_wsgi_gthread": "floor: bare WSGI, GUNICORN_THREADS=4",
    "original_faithful": "original /predictDummy/ as written (2 predicts, INFO log to file, metrics)",
    "original_light": "original, light (one predict, no logging, no metrics)",
    "mlflow": "mlflow models serve (uvicorn, 1 worker)",
}
ORDER = list(LABELS)


def _latest(records: list[dict[str, Any]], bench: str) -> list[dict[str, Any]]:
    sessions = [r.get("session") for r in records if r.get("bench") == bench]
    if not sessions:
        return []
    last = sessions[-1]
    return [r for r in records if r.get("bench") == bench and r.get("session") == last]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def serving_summary(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Medians per (variant, scenario, clients), with per-run ratios against each of BASELINES."""
    runs = [r for r in records if r.get("bench") == "serving"]
    by_key: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        by_key.setdefault((r["variant"], r["scenario"], r["clients"]), []).append(r)
    out = {}
    for key, items in by_key.items():
        _variant, scenario, clients = key
        ratios = {}
        for other in BASELINES:
            per_run = []
            for item in items:
                twin = next((o for o in by_key.get((other, scenario, clients), []) if o["run"] == item["run"]), None)
                if twin and twin["rows_per_s"]:
                    per_run.append(item["rows_per_s"] / twin["rows_per_s"])
            ratios[other] = median(per_run) if per_run else None
        cpu = [r["cpu_s_per_1000_requests"] for r in items]
        out[key] = {
            "rps": median(r["rps"] for r in items), "rows_per_s": median(r["rows_per_s"] for r in items),
            "p50_ms": median(r["p50_ms"] for r in items), "p99_ms": median(r["p99_ms"] for r in items),
            "errors": sum(r["errors"] for r in items), "requests": sum(r["requests"] for r in items),
            "app_cpu": median(c["app"] for c in cpu if c["app"] is not None),
            "nginx_cpu": median(c["nginx"] for c in cpu if c["nginx"] is not None),
            "db_cpu": median(c.get("ferretdb") or 0.0 for c in cpu), "runs": len(items),
            # Storing variants: the share of answered rows that reached the database (the rest were dropped by
            # the bounded buffer), and FerretDB's CPU per request including the backlog stored after the run.
            "stored_share": _stored_share(items),
            "db_cpu_incl": median(1000 * r["ferretdb_cpu_s_incl_settle"] / r["requests"] for r in items)
            if all("ferretdb_cpu_s_incl_settle" in r and r["requests"] for r in items) else None,
            **{field: ratios[other] for other, field in BASELINES.items()},
        }
    return out


def _paired_cpu_ratio(records: list[dict[str, Any]], variant: str, base: str, scenario: str = "one_row",
                      clients: int = 8) -> float | None:
    """Median over runs of variant's app CPU per request over base's in the same run (serving benchmark)."""
    runs = [r for r in _latest(records, "serving") if r["scenario"] == scenario and r["clients"] == clients
            and r["cpu_s_per_1000_requests"]["app"]]
    return _paired_ratio([r for r in runs if r["variant"] == base], [r for r in runs if r["variant"] == variant],
                         lambda r: r["cpu_s_per_1000_requests"]["app"])


def _stored_share(items: list[dict[str, Any]]) -> float | None:
    stored = sum(r.get("rows_stored", 0) for r in items)
    dropped = sum(r.get("rows_dropped", 0) for r in items)
    if not any("rows_stored" in r for r in items) or stored + dropped == 0:
        return None
    return stored / (stored + dropped)


def plot(summary: dict[tuple[str, str, int], dict[str, Any]], path: Path = PLOT) -> Path | None:
    """Throughput and latency per variant (one row at 1 and 8 clients; batch rows/s)."""
    if not summary:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5))
    variants = [v for v in ORDER if any(k[0] == v for k in summary)]
    colors = {v: plt.cm.tab10(i) for i, v in enumerate(variants)}
    for ax, (scenario, metric, title) in zip(axes[:2], [("one_row", "rps", "one-row predictions: requests/s"),
                                                          ("batch_1000", "rows_per_s", "1,000-row batches: rows/s")],
                                             strict=True):
        width = 0.8 / max(len(variants), 1)
        for i, variant in enumerate(variants):
            values = [summary.get((variant, scenario, c), {}).get(metric, 0.0) for c in (1, 8)]
            ax.bar([x + i * width for x in (0, 1)], values, width, label=LABELS[variant], color=colors[variant])
        ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], ["1 client", "8 clients"])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[2]
    for variant in variants:
        for scenario, marker in (("one_row", "o"), ("batch_1000", "s")):
            s = summary.get((variant, scenario, 8))
            if s:
                ax.errorbar([s["p50_ms"]], [s["rps"]], xerr=[[0], [max(s["p99_ms"] - s["p50_ms"], 0)]],
                            fmt=marker, color=colors[variant], capsize=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ms at 8 clients: p50 (mark) to p99 (bar); o one row, □ batch")
    ax.set_ylabel("requests/s")
    ax.set_title("latency vs throughput, 8 clients")
    ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _machine(records: list[dict[str, Any]]) -> list[str]:
    sessions = [r for r in records if r.get("bench") == "session"]
    if not sessions:
        return ["(no session recorded yet)"]
    m = sessions[-1]["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Linux {m['kernel']}; "
             f"Python {m['python']}",
             f"- {m['nginx']}; {m['wrk']}; FerretDB {m['ferretdb']} (SQLite backend)",
             f"- {packages}",
             f"- repository at {m['git_commit']}{' with uncommitted changes' if m['git_dirty'] else ''}"]
    for s in sessions[-6:]:
        end = next((r for r in records if r.get("bench") == "session-end" and r.get("session") == s["session"]),
                   None)
        lines.append(f"- session {s['session']}: `python -m bench {' '.join(s['argv'])}`, load average "
                     f"{s['load_start']} at start{'' if s['quiet'] else ' (did not drop below the limit in time)'}"
                     + (f", {end['load_end']} at end" if end else ", stopped before its end (partial figures)")
                     # A load average above the core count means other work shared the cores with the run.
                     + (" (a shared machine: other work ran meanwhile)"
                        if max(s["load_start"], end["load_end"] if end else 0) > m["cores"] else ""))
        # Notes recorded by hand about a session (`{"bench": "note", "about": <session>, "text": ...}`).
        lines += [f"  - {r['text']}" for r in records if r.get("bench") == "note" and r.get("about") == s["session"]]
    return lines


def render(path: Path = README) -> Path:
    """Write bench/README.md from the latest figures of each kind."""
    records = read_results()
    serving_runs = _latest(records, "serving")
    summary = serving_summary(serving_runs)
    plot(summary)
    openloop = _latest(records, "openloop")
    plot_openloop(openloop)
    out = [HEADER, "## Machine and sessions", "", *_machine(records), ""]
    out += _serving_section(summary, serving_runs, records)
    out += _openloop_section(openloop, _latest(records, "openloop-max"), records)
    out += _tail_section(_latest(records, "openloop-tail"), records)
    out += _targets_section(summary, records)
    out += _storage_section(_latest(records, "storage-layout"), _latest(records, "storage-backend"))
    out += _reload_section(_latest(records, "reload"))
    out += _shutdown_section(_latest(records, "shutdown"))
    out += _soak_section(_latest(records, "soak"))
    out += _ingest_section(_latest(records, "ingest"))
    out += _training_section(_latest(records, "training"), _latest(records, "training-fill"))
    out += _memory_section(_latest(records, "memory"))
    out += _profile_section(_latest(records, "profile"))
    out += _tracing_section(_latest(records, "tracing-summary"))
    out.append(FOOTER)
    path.write_text("\n".join(out) + "\n")
    return path


def _serving_section(summary: dict, runs: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    if not summary:
        return ["## 1. Serving", "", "(not run yet)", ""]
    first = runs[0]
    rows = []
    for scenario in ("one_row", "batch_1000"):
        for clients in (1, 8):
            for variant in ORDER:
                s = summary.get((variant, scenario, clients))
                if not s:
                    continue
                db_cpu = s["db_cpu_incl"] if s.get("db_cpu_incl") is not None else s["db_cpu"]
                share = s.get("stored_share")
                rows.append([scenario.replace("_", " "), str(clients), LABELS[variant], s["rps"], s["rows_per_s"],
                             s["p50_ms"], s["p99_ms"], s["errors"], f"{share:.1%}" if share is not None else "-",
                             f"{s['app_cpu']:.3f}", f"{s['nginx_cpu']:.3f}", f"{db_cpu:.3f}",
                             *(f"{s[field]:.2f}x" if s[field] else "-" for field in BASELINES.values())])
    storage = _latest(records, "storage")
    lines = ["## 1. Serving through Nginx", "",
             f"{first['runs']} runs of {first['run_seconds']:g} s per line (medians; ratios are medians of per-run "
             "ratios, each against the same run of the other variant), wrk with 1 or 8 keep-alive connections to "
             "each variant's Nginx, 2 Gunicorn workers for ours, both originals and the floors, 1 uvicorn worker "
             "for mlflow serve. CPU is utime+stime in seconds per 1,000 requests of the app's process tree, of "
             "Nginx and of FerretDB (which stores our predictions; counted until it is idle again after the run, "
             "so the backlog a run leaves is included). \"stored\" is the share of answered rows the writer "
             "stored (`serving_predictions_stored_total`); the rest were dropped by the bounded buffer "
             "(`serving_predictions_dropped_total`) because FerretDB could not insert them as fast.", "",
             _table(["payload", "clients", "variant", "req/s", "rows/s", "p50 ms", "p99 ms", "errors", "stored",
                     "app CPU s/1k req", "Nginx CPU s/1k", "FerretDB CPU s/1k", "x faithful original",
                     "x light original", "x mlflow serve"], rows),
             "", "![throughput and latency per variant](results/serving.png)", ""]
    one_row = _one_row_storage_check(records)
    if one_row:
        lines += [f"Prediction storage at one-row rates (memory run, session {one_row['session']}): "
                  f"{one_row['answered_rows_counted']:,} rows answered (counted by wrk), {one_row['stored']:,} "
                  f"written (`serving_predictions_stored_total`), {one_row['documents_in_db']:,} rows stored in "
                  f"MongoDB (counted in both layouts), {int(one_row['dropped_counted']):,} dropped. wrk does not "
                  "count requests still in "
                  "flight when a run ends; the server answers and stores them, so stored may exceed the count.", ""]
    if storage:
        s = storage[-1]
        lines += [f"Over all the serving runs above together (session {s['session']}, batches included): "
                  f"{s['answered_rows_counted']:,} rows answered, {s['stored']:,} stored, "
                  f"{int(s['dropped_counted']):,} dropped"
                  + (": rows came faster than the writer stored them, and its bounded buffer dropped the oldest "
                     "(the stored column says where)." if s["dropped_counted"] else
                     "; stored may exceed answered by the requests wrk did not count at the end of a run."), ""]
    return lines


def _one_row_storage_check(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest storage check of the memory run (one-row requests, documents counted in the database)."""
    checks = [r for r in records if r.get("bench") == "storage" and "documents_in_db" in r]
    return checks[-1] if checks else None


def _targets_section(summary: dict, records: list[dict[str, Any]]) -> list[str]:
    def get(variant: str, scenario: str, clients: int, field: str) -> Any:
        return summary.get((variant, scenario, clients), {}).get(field)

    def row(target: str, value: Any, ok: bool | None, note: str = "") -> list[Any]:
        verdict = "-" if ok is None else ("met" if ok else "**not met**")
        return [target, value, verdict, note]

    def ratio(x: Any) -> str:
        return f"{x:.2f}x" if isinstance(x, float) else "-"

    rows = []
    vo = get("ours", "one_row", 8, "vs_faithful")
    floor_flask = get("floor_flask", "one_row", 8, "vs_faithful")
    floor_flask_g = get("floor_flask_gthread", "one_row", 8, "vs_faithful")
    floor_wsgi = get("floor_wsgi", "one_row", 8, "vs_faithful")
    floor_wsgi_g = get("floor_wsgi_gthread", "one_row", 8, "vs_faithful")
    gthread = get("ours_gthread", "one_row", 8, "vs_faithful")
    rows.append(row("one row, 8 clients: ≥ 7x the faithful original (same worker count)", ratio(vo),
                    vo >= 7 if vo else None,
                    f"against the light original (one predict, no logging, no metrics) "
                    f"{ratio(get('ours', 'one_row', 8, 'vs_light'))}; threaded workers {ratio(gthread)}; "
                    "ceiling for a Flask service on this machine: a Flask "
                    f"handler doing no work {ratio(floor_flask)} (threaded {ratio(floor_flask_g)}); without Flask, "
                    f"a bare WSGI app {ratio(floor_wsgi)} (threaded {ratio(floor_wsgi_g)}); see Findings"))
    vm = get("ours", "one_row", 8, "vs_mlflow")
    rows.append(row("one row, 8 clients: ≥ 10x mlflow models serve", ratio(vm), vm >= 10 if vm else None,
                    f"threaded workers {ratio(get('ours_gthread', 'one_row', 8, 'vs_mlflow'))}"))
    cpu_ratio = _paired_cpu_ratio(records, "ours", "floor_flask")
    ours_cpu, floor_cpu = get("ours", "one_row", 8, "app_cpu"), get("floor_flask", "one_row", 8, "app_cpu")
    rows.append(row("one row, 8 clients: app CPU per request ≤ 1.2x a Flask handler doing no work",
                    ratio(cpu_ratio), cpu_ratio <= 1.2 if cpu_ratio else None,
                    f"{_fmt(ours_cpu, 3)} against {_fmt(floor_cpu, 3)} CPU ms per request (same Gunicorn worker "
                    f"count, same Nginx; median of per-run ratios); storage off "
                    f"{ratio(_paired_cpu_ratio(records, 'ours_nostore', 'floor_flask'))}; the py-spy tables say "
                    "where the difference goes"))
    p99 = get("ours", "one_row", 8, "p99_ms")
    rows.append(row("one row, 8 clients (closed loop, wrk): p99 ≤ 15 ms", f"{p99:.2f} ms" if p99 else "-",
                    p99 <= 15 if p99 else None))
    openloop = openloop_summary(_latest(records, "openloop"))
    at75 = openloop.get(("ours", 0.75))
    if at75:
        rows.append(row("open loop (oha -q), 75% of our maximum rate: p99 ≤ 15 ms", f"{at75['p99_ms']:.2f} ms",
                        at75["p99_ms"] <= 15, f"{at75['rate']:,.0f} req/s offered, {at75['achieved_rps']:,.0f} "
                        f"achieved, p99.9 {_fmt(at75['p999_ms'], 2)} ms, {at75['errors']} errors; p99 of each run "
                        + ", ".join(f"{v:.1f}" for v in at75["p99_per_run"]) + " ms"
                        + (f"; p99 in Nginx {at75['nginx_p99_ms']:.1f} ms, of the app "
                           f"{_fmt(at75['upstream_p99_ms'], 1)} ms" if at75["nginx_p99_ms"] is not None else "")))
    errors = sum(s["errors"] for k, s in summary.items() if k[0].startswith("ours"))
    rows.append(row("0 errors (ours, every run)", errors, errors == 0 if summary else None))
    s = _one_row_storage_check(records)
    if s:
        batch_share = get("ours", "batch_1000", 8, "stored_share")
        rows.append(row("storage on, one-row requests: every answered prediction stored",
                        f"{s['stored']:,} stored / {s['answered_rows_counted']:,} counted, "
                        f"{int(s['dropped_counted']):,} dropped", bool(s["complete"]),
                        "100k one-row requests at 8 clients (memory run)"
                        + (f"; 1,000-row batches at 8 clients: {batch_share:.1%} stored"
                           + (", the rest dropped and counted" if batch_share < 1 else "")
                           if batch_share is not None else "")))
    shutdown = _latest(records, "shutdown")
    if shutdown:
        s = shutdown[-1]
        rows.append(row("SIGTERM under load: stored == 200 answers", f"{s['stored']:,} == {s['answered_200']:,}",
                        bool(s["equal"])))
    vb = get("ours", "batch_1000", 8, "vs_mlflow")
    vb_nostore = get("ours_nostore", "batch_1000", 8, "vs_mlflow")
    budget_note = ""
    mlflow_batches = get("mlflow", "batch_1000", 8, "rps")
    cost = _storage_cost(records)
    sessions = [r for r in records if r.get("bench") == "session"]
    share = get("ours", "batch_1000", 8, "stored_share")
    if share is not None:
        budget_note += f"; storage on stored {share:.1%} of the answered rows" + (
            ", the buffer dropped the rest" if share < 1 else "")
    if mlflow_batches and "per-row" in cost and sessions:
        cores = sessions[-1]["machine"]["cores"]
        budget_ms = cores * 1000 / (4 * mlflow_batches)
        budget_note += (f"; 4x means at most {budget_ms:.1f} CPU ms per batch on {cores} cores for everything; "
                        f"FerretDB spends {cost.get('packed', float('nan')):.1f} ms storing a batch as serving "
                        f"does (one packed bucket), {cost.get('arrays', float('nan')):.1f} ms as one document of "
                        f"arrays, {cost['per-row']:.1f} ms as 1,000 documents (Storing and reading rows)")
    batch_share = get("ours", "batch_1000", 8, "stored_share")
    rows.append(row("1,000-row batches, 8 clients, storage on: no drops at ≥ 4x mlflow serve rows/s",
                    f"{ratio(vb)}, {_fmt(100 * batch_share)}% stored" if batch_share is not None else ratio(vb),
                    vb >= 4 and batch_share == 1.0 if vb and batch_share is not None else None,
                    f"storage off: {ratio(vb_nostore)}; 1 client: {ratio(get('ours', 'batch_1000', 1, 'vs_mlflow'))}"
                    + budget_note))
    reload = _latest(records, "reload")
    if reload:
        worst = max((r["all_workers_new_s"] or math.inf) for r in reload)
        failed = sum(r["failed_requests"] for r in reload)
        rows.append(row("hot reload: all workers on the new version ≤ 5 s after promotion", f"{worst:.2f} s (worst)",
                        worst <= 5))
        rows.append(row("hot reload: 0 failed requests", failed, failed == 0))
    ingest = _latest(records, "ingest")
    if ingest:
        ours = median(r["rows_per_s"] for r in ingest if r["variant"] == "ours-repository")
        orig = median(r["rows_per_s"] for r in ingest if r["variant"] == "original")
        cpu = {v: median(r["ferretdb_cpu_s"] / r["rows"] * 1e6 for r in ingest if r["variant"] == v)
               for v in ("ours-repository", "original")}
        fills = _latest(records, "training-fill")
        fill = f"; rows without pending marks (training fill) {max(f['rows_per_s'] for f in fills) / orig:.1f}x" \
            if fills else ""
        orig_s = median(r["seconds"] for r in ingest if r["variant"] == "original")
        ours_cpu_s = median(r["ferretdb_cpu_s"] for r in ingest if r["variant"] == "ours-repository")
        parallel = [r["rows_per_s"] for r in ingest if r["variant"] == "ours-2-threads"]
        par = (f"; two inserting clients {median(parallel) / orig:.1f}x, only {median(parallel) / ours:.2f} times "
               "one client: SQLite has one writer" if parallel else "")
        rows.append(row("ETL ingest ≥ 20x the original's per-row inserts", ratio(ours / orig), ours / orig >= 20,
                        f"FerretDB's own CPU per stored row is {cpu['ours-repository']:.0f} us (row + pending mark) "
                        f"vs {cpu['original']:.0f} us for insert_one: {ours_cpu_s:.1f} s per run against the "
                        f"original's {orig_s:.1f} s, so at most {orig_s / ours_cpu_s:.1f}x one insert at a time, "
                        f"{2 * orig_s / ours_cpu_s:.1f}x if FerretDB had both cores to itself and the client cost "
                        f"nothing{par}{fill}"))
    training = _latest(records, "training")
    sizes = sorted({r["size"] for r in training})
    if sizes:
        size = sizes[-1]
        ours = median(r["seconds"] for r in training if r["size"] == size and r["variant"] == "ours-load")
        orig = median(r["seconds"] for r in training if r["size"] == size and r["variant"] == "original-load")
        floor = median(r["seconds"] for r in training if r["size"] == size and r["variant"] == "floor-load")
        ours_mem = median(r["peak_above_baseline_mib"] for r in training
                          if r["size"] == size and r["variant"] == "ours-load")
        orig_mem = median(r["peak_above_baseline_mib"] for r in training
                          if r["size"] == size and r["variant"] == "original-load")
        rows.append(row(f"training load of {size:,} rows ≥ 3x faster than list(find())", ratio(orig / ours),
                        orig / ours >= 3, f"ceiling: FerretDB alone sending the raw documents takes {floor:.1f} s, "
                        f"i.e. at most {orig / floor:.2f}x (see Findings)"))
        rows.append(row(f"training load of {size:,} rows: lower peak memory", f"+{ours_mem:,.0f} MiB vs "
                        f"+{orig_mem:,.0f} MiB", ours_mem < orig_mem))
    return ["## Targets", "", _table(["target", "measured", "verdict", "note"], rows), ""]


def _reload_section(reload: list[dict[str, Any]]) -> list[str]:
    if not reload:
        return []
    rows = [[r["mode"], f"{r['old_version']} → {r['new_version']}", r["all_workers_new_s"], r["last_old_answer_s"],
             r["failed_requests"], r["wrk"].get("requests"), r["wrk"].get("rps"), r["wrk"].get("p99_ms")]
            for r in reload]
    return ["## 2. Model hot reload under load", "",
            "8 wrk clients on one-row /predict through Nginx for 16 s; the champion alias moves 4 s in. `alias`: "
            "only the alias is set (MODEL_POLL_SECONDS = 2 s; from session 20261206T152203 on one worker polls "
            "and its siblings follow through the reload marker, before it every worker polled); `alias+reload`: the "
            "reload "
            "endpoint is called too, as the training service does. Times from the end of the alias call; "
            "\"all workers\" from the per-worker `serving_model_version` series on /metrics (polled every 50 ms), "
            "\"last old answer\" from two sampler clients reading `model.version` in every answer.", "",
            _table(["mode", "versions", "all workers new (s)", "last old answer (s)", "failed requests",
                    "requests during trial", "req/s", "p99 ms"], rows), ""]


def _shutdown_section(shutdown: list[dict[str, Any]]) -> list[str]:
    if not shutdown:
        return []
    s = shutdown[-1]
    return ["## Graceful shutdown under load", "",
            f"{s['clients']} client threads posting one-row predictions straight to Gunicorn; SIGTERM to the master "
            f"after {s['answered_200_before_sigterm']:,} answers, clients kept sending. Answers 200: "
            f"{s['answered_200']:,}; predictions stored: {s['stored']:,} ({'equal' if s['equal'] else 'NOT equal'}); "
            f"other outcomes: {s['other_outcomes']}; master exited {s['master_exit_s']} s after the signal. "
            "tests/e2e/test_serving_shutdown.py asserts the same in the test suite.", ""]


def _soak_section(soak: list[dict[str, Any]]) -> list[str]:
    if not soak:
        return []
    s = soak[-1]
    first, last = s["first_sample"], s["last_sample"]
    rows = []
    for name, value in last.items():
        if isinstance(value, dict) and "rss_mib" in value and isinstance(first.get(name), dict):
            before = first[name]
            rows.append(f"| {name} | {before['rss_mib']} → {value['rss_mib']} | {before['open_files']} → "
                        f"{value['open_files']} | {before['processes']} → {value['processes']} |")
    runs = " · ".join(f"{job} {first.get('run_records', {}).get(job, '?')} → {n}"
                      for job, n in last.get("run_records", {}).items())
    faults = "; ".join(f"{f['at_s']} s {f['fault']}" + (f" (not injected: {f['error']})" if "error" in f else "")
                       for f in s["faults"])
    return ["## Soak: mixed load with faults", "",
            f"`bench/run.sh soak --soak-seconds {s['seconds']:.0f} --fault-every {s['fault_every']:.0f}` "
            f"({s['time'][:16]} UTC): one-row predictions every 20 ms, a 1,000-row batch every 5 s, ETL every "
            f"20 s, training every 2 min. Faults: {faults}.", "",
            f"Answers: {s['load']}. Settle run: {s['settle']}. "
            f"Invariants: {'all hold' if s['invariants_ok'] else 'BROKEN'}: {s['invariants']}.", "",
            "| process tree | RSS MiB first → last | open files | processes |", "| --- | --- | --- | --- |",
            *rows, "", f"Run records: {runs}.", ""]


# Workloads of the storage benchmark and their layouts, in table order (bench/storage_bench.py).
STORAGE_WORKLOADS = {"serving-writes": ("per-row", "one-row", "one-row-packed", "arrays", "packed"),
                     "etl-ingest": ("rows",),
                     "training-read": ("rows",)}
STORAGE_BACKENDS = ("sqlite", "postgresql")


def _storage_key(record: dict[str, Any]) -> tuple[str, str, str]:
    # Records from before the backend dimension are FerretDB on SQLite storing predictions.
    return record.get("workload", "serving-writes"), record.get("backend", "sqlite"), record["layout"]


def _db_cpu_ms(record: dict[str, Any]) -> float:
    """Database CPU ms per 1,000 rows: FerretDB, plus PostgreSQL's processes for that backend."""
    return record.get("db_cpu_ms_per_1000_rows", record["ferretdb_cpu_ms_per_1000_rows"])


def _storage_cost(records: list[dict[str, Any]]) -> dict[str, float]:
    """Median FerretDB-on-SQLite CPU ms per 1,000 stored predictions, per layout (latest storage-layout session)."""
    layouts: dict[str, list[float]] = {}
    for r in _latest(records, "storage-layout"):
        workload, backend, layout = _storage_key(r)
        if workload == "serving-writes" and backend == "sqlite":
            layouts.setdefault(layout, []).append(_db_cpu_ms(r))
    return {layout: median(values) for layout, values in layouts.items()}


def _paired_ratio(base: list[dict[str, Any]], other: list[dict[str, Any]], value: Any) -> float | None:
    """Median over runs of value(other run) / value(base run), runs paired by index."""
    by_run = {r["run"]: value(r) for r in base}
    ratios = [value(r) / by_run[r["run"]] for r in other if by_run.get(r["run"])]
    return median(ratios) if ratios else None


def _storage_section(storage: list[dict[str, Any]], backends: list[dict[str, Any]]) -> list[str]:
    if not storage:
        return []
    rows = []
    for workload, layouts in STORAGE_WORKLOADS.items():
        for layout in layouts:
            sq, pg = ([r for r in storage if _storage_key(r) == (workload, backend, layout)]
                      for backend in STORAGE_BACKENDS)
            if not sq and not pg:
                continue
            first = (sq or pg)[0]
            speed = _paired_ratio(sq, pg, lambda r: r["rows_per_s"])
            cost = _paired_ratio(sq, pg, _db_cpu_ms)
            pg_cpu = "-"
            if pg:
                pg_cpu = (f"{median(_db_cpu_ms(r) for r in pg):,.1f} "
                          f"({median(r['ferretdb_cpu_ms_per_1000_rows'] for r in pg):,.1f} + "
                          f"{median(_db_cpu_ms(r) - r['ferretdb_cpu_ms_per_1000_rows'] for r in pg):,.1f})")
            rows.append([workload, layout, f"{first['rows']:,}", max(len(sq), len(pg)),
                         median(r["rows_per_s"] for r in sq), median(r["rows_per_s"] for r in pg),
                         f"{speed:.2f}x" if speed else "-", median(_db_cpu_ms(r) for r in sq), pg_cpu,
                         f"{cost:.2f}x" if cost else "-"])
    loads = [r[key] for r in storage for key in ("load_start", "load_end") if r.get(key) is not None]
    lines = ["## Storing and reading rows: FerretDB on SQLite or on PostgreSQL", "",
             f"Session {storage[0]['session']} (`bench/storage_bench.py`): one client, one call at a time, the "
             "project's own functions; each backend its own FerretDB (on PostgreSQL: Debian's PostgreSQL 15, a "
             "private cluster, durable defaults), the backends taking turns within every run. `serving-writes`: "
             "predictions through `PredictionsRepository.insert` into a collection with the monitor's index, "
             "`per-row` as 1,000-row requests in the per-row layout (`row_documents`), `one-row` as one-row "
             "requests 500 documents per insert (a writer flush, one document per row), `one-row-packed` the same "
             "500 requests packed into one bucket per insert (what serving does), `arrays` one document per "
             "1,000-row request with one array per feature (queryable; not used), `packed` what serving stores "
             "for an anonymous 1,000-row "
             "request (one bucket, inputs and predictions as packed float64); `etl-ingest`: "
             "`RowsRepository.insert_batch` of 1,000-row batches with pending marks (two documents per row); "
             "`training-read`: `load_training_data` of every stored row. CPU is utime+stime of the "
             "database's process trees per 1,000 rows (FerretDB; on PostgreSQL FerretDB + the postmaster and every "
             "backend, ended ones included; a PostgreSQL write's figure includes a CHECKPOINT after the clock stops, "
             "the data-file writes it defers). Ratios are medians of per-run ratios, PostgreSQL over SQLite: above "
             "1x is faster for rows/s, costlier for CPU."
             + (f" Load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f}." if loads else ""), "",
             _table(["workload", "layout", "rows per run", "runs", "SQLite rows/s", "PostgreSQL rows/s",
                     "rows/s PG/SQLite", "SQLite DB CPU ms/1k rows", "PostgreSQL DB CPU ms/1k rows (FerretDB + PG)",
                     "CPU PG/SQLite"], rows), ""]
    facts = []
    for b in backends:
        if b["backend"] == "postgresql":
            facts.append(f"PostgreSQL ({b.get('postgresql') or 'version unknown'}): a new cluster (initdb, start, "
                         f"the database) {b['postgresql_first_start_s']:.2f} s, a restart holding the run's data "
                         f"{b['postgresql_restart_s']:.2f} s, FerretDB on it {b['ferretdb_restart_s']:.2f} s; data "
                         f"dir {b['data_mib']:,.0f} MiB")
        else:
            facts.append(f"SQLite: FerretDB restart {b['ferretdb_restart_s']:.2f} s; data dir {b['data_mib']:,.0f} MiB")
    if facts:
        lines += ["Start and disk, with everything the session stored: " + "; ".join(facts) + ".", ""]
    return lines


def _ingest_section(ingest: list[dict[str, Any]]) -> list[str]:
    if not ingest:
        return []
    variants = ["ours-repository", "ours-2-threads", "ours-endpoint", "original"]
    rows = []
    orig = median(r["rows_per_s"] for r in ingest if r["variant"] == "original")
    for v in variants:
        items = [r for r in ingest if r["variant"] == v]
        if items:
            rps = median(r["rows_per_s"] for r in items)
            rows.append([v, items[0]["rows"], median(r["seconds"] for r in items), rps,
                         median(r["ferretdb_cpu_s"] for r in items), f"{rps / orig:.1f}x", len(items)])
    return ["## 3. ETL ingest into FerretDB", "",
            "`ours-repository`: the ETL's `RowsRepository.insert_batch` (rows plus pending marks) in 10k-row "
            "batches, as /ingest stores them; `ours-2-threads`: the same from two concurrent clients (FerretDB "
            "on SQLite inserts one batch at a time, so this gains little); `ours-endpoint`: POST /ingest through "
            "Nginx in 10k-row JSON requests "
            "with serving running (validation, storage, forwarding to serving, serving storing the predictions); "
            "`original`: one `insert_one` per row.", "",
            _table(["variant", "rows", "seconds", "rows/s", "FerretDB CPU s", "x original", "runs"], rows), ""]


def _training_section(training: list[dict[str, Any]], fills: list[dict[str, Any]]) -> list[str]:
    if not training:
        return []
    rows = []
    for size in sorted({r["size"] for r in training}):
        for v in ("ours-load", "original-load", "floor-load", "ours-cycle", "original-cycle"):
            items = [r for r in training if r["size"] == size and r["variant"] == v]
            if items:
                rows.append([f"{size:,}", v, median(r["seconds"] for r in items),
                             median(r["peak_rss_mib"] for r in items),
                             median(r["peak_above_baseline_mib"] for r in items),
                             median(r["ferretdb_cpu_s"] for r in items)])
    fill = "; ".join(f"{f['rows']:,} rows inserted in {f['seconds']} s ({f['rows_per_s']:,} rows/s)" for f in fills)
    return ["## 4. Training data load and training cycle", "",
            "Each step in a fresh subprocess (peak RSS = its RSS high-water mark, VmHWM; baseline = RSS after "
            "imports and the MongoDB connection). `ours-load`: `RowsRepository.labelled_arrays` into the training "
            "frame; "
            "`original-load`: `pd.DataFrame(list(collection.find()))`; `floor-load`: the raw BSON batches of every "
            "document, never decoded (FerretDB's own share of any read). Cycles: ours is `TrainingService.run` "
            "(read, fit, holdout scores, register with skops, champion comparison, promotion); the original reads "
            f"with list(find()), fits ElasticNet, logs and registers. {fill}.", "",
            _table(["rows", "step", "seconds", "peak RSS MiB", "peak above baseline MiB", "FerretDB CPU s"], rows),
            ""]


def _memory_section(memory: list[dict[str, Any]]) -> list[str]:
    if not memory:
        return []
    rows = []
    for r in memory:
        for w in r.get("worker_memory") or []:
            rows.append([r["phase"], w["pid"], w["rss_mib"], w["pss_mib"]])
    return ["## 5. Serving worker memory", "",
            "RSS and PSS (shared pages split among sharers) of each of our Gunicorn workers.", "",
            _table(["when", "worker pid", "RSS MiB", "PSS MiB"], rows), ""]


def _profile_section(profiles: list[dict[str, Any]]) -> list[str]:
    if not profiles:
        return []
    lines = ["## Where a worker's time goes (py-spy)", ""]
    for p in profiles:
        rows = [[name, f"{share:.1f}%"] for name, share in p["buckets"].items()]
        load = p.get("load") or {}
        lines += [f"**{p['variant']}**, one-row predictions at 8 clients ({_fmt(load.get('rps'))} req/s while "
                  f"sampled), {p['samples']:,} busy samples; full table in "
                  f"`results/{Path(p['summary_file']).name}` (collapsed stacks in `results/raw/`, not committed):", "",
                  _table(["bucket", "share"], rows), ""]
    return lines


HEADER = """# Benchmarks

Generated by `bench/report.py` from `results/results.jsonl`; do not edit by hand. Regenerate everything with
one command (installs wrk from Debian and py-spy from PyPI if missing, waits up to 10 min for the machine to
be quiet, runs every benchmark, renders this file and the plot):

```bash
bench/run.sh                         # = make bench; defaults: 20 s runs, 3 runs, 100k/1M training rows
bench/run.sh serving --seconds 5 --runs 1   # one part, shorter (figures are appended, the latest shown)
bench/run.sh openloop --seconds 5 --runs 1  # open-loop latency; builds oha (crates.io, pinned) on first use
bench/run.sh tail --seconds 5 --runs 2      # what the open-loop p99 at 75% depends on (one change per variant)
```

Everything runs on this machine: real FerretDB, S3 (versitygw), MLflow tracking server, Gunicorn, Nginx and
`mlflow models serve`, on loopback ports, each load run bounded in time (and count). The servers, the
load generator and everything else share the same cores, so ratios measured in one run are the figures to
compare; absolute figures move with the machine's other load (recorded below)."""

FOOTER = """## Findings

- **One-row serving is bounded by Flask's request machinery, not by our handler.** Two baselines reproduce the
  original's `/predictDummy/` (`bench/original_apps.py`): the faithful one is the path its users run (two
  pyfunc predictions on a pandas DataFrame per request, an INFO line to a rotating file, its Prometheus
  middleware); the light one keeps only one prediction. The arithmetic below was worked out against the light
  one (in sessions before 20261206 the only baseline, then called "original"): on this machine it costs about
  1.6-2.1 ms of CPU per request and answers about 1,000 req/s with 2 workers when the machine is quiet. A
  Flask handler that does nothing but parse the JSON
  and answer a constant, under the same Gunicorn and Nginx, reaches the "floor: Flask" lines, with sync or
  threaded workers: that bounds any Flask handler here, and it stays well below 7x the light original. Without
  Flask, a bare WSGI app under threaded workers (which keep Nginx's upstream connections open, saving a
  connect per request) passes 7x, so Gunicorn and Nginx alone are not the limit. The arithmetic, from the CPU
  columns: at 7x the light original the two cores have about 0.26 ms per request for wrk, Nginx and the app
  together; Nginx takes about 0.05 ms of it with kept-alive upstreams, wrk a few hundredths, and Gunicorn's
  own machinery (the bare WSGI app's CPU) about 0.15 ms. That leaves a few hundredths of a millisecond for
  everything else, while Flask alone costs about 0.1 ms more (the Flask floor's CPU) and our own work on top of
  it (JSON decode, validation, the folded linear model, request ids, metrics, queued storage; the py-spy
  table) about another 0.1 ms (the storage-off line against the Flask floor). So 7x is out of reach for a Flask
  service here, and even a predict route served outside Flask, which the stack's Flask services rule out,
  would still carry that per-request work past the budget.
- **Prediction storage** is off the request path but not free on a two-core machine that also runs the
  database: every CPU millisecond FerretDB spends storing is taken from serving and the load generator.
  "Storing and reading rows" gives its CPU per 1,000 stored rows per layout. One document per row costs it
  tens of milliseconds per 1,000 rows (it stores JSON and indexes each document), one document of arrays less
  but still most of that (it converts every number), and a packed bucket (two binaries) a small fraction,
  so serving packs every anonymous prediction: what one flush of a worker's writer holds of a model becomes
  one bucket, one-row requests included (before session 20261206T120307 one-row requests were one document
  each and 1,000-row batches one document of arrays, then one packed bucket per request). Packing, and a
  writer that writes back to back once a full call (10,000 rows) is waiting, are why 1,000-row batches at full
  speed are now stored in full (the "stored" column). One document per row made the bounded buffer
  (`PREDICTION_BUFFER_MAX` per worker) drop most of them; with packing but a fixed 0.5 s pause after every
  flush (until session 20261206T142337) a worker took in about 95,000 rows per flush-and-pause cycle, close to
  its 100,000-row bound, and 4.8% were dropped (session 20261206T120833). Drops are always counted in
  `serving_predictions_dropped_total`, never silent. The price is that an anonymous prediction cannot be
  queried by input value in MongoDB (nothing in the stack does; the drift monitor unpacks the newest buckets).
  The ETL's rows keep one document per row: they are read by id.
- **Open-loop tail on two cores.** At 75% of the closed-loop maximum the two cores are most of the way busy
  with the load generator, Nginx, the workers and FerretDB, so any burst of other work delays the requests
  queued behind it, and a p99 catches bursts that touch 1% of the requests. The Nginx columns place the time:
  below saturation, the p99 Nginx records for the app (`$upstream_response_time`: connect, wait for a free
  sync worker, answer) is most of oha's, and Nginx adds nothing of its own; where oha's p99 is far above
  Nginx's, ours could not keep up with the offered rate that minute and requests waited in oha's connections.
  The largest burst found was the registry poll ("Open-loop tail": one check costs the MLflow server and the
  worker the CPU given there). With every worker polling every 2 s, turning polling off took the p99 at 75%
  from 106.8 ms (36 to 194 per run) to 17.6 ms (14 to 21; session 20261206T150810), so from session
  20261206T152203 on one worker per instance polls and its siblings follow through the reload marker. More
  workers or threaded workers did not help. What is left is the machine: the share of both cores left idle
  at the same offered rate, and the per-run p99 of one configuration, moved more between points than any
  difference left between the variants; the maximum itself moved by a third within a session, so "75% of it"
  was sometimes more than the machine could serve a few minutes later.
- **FerretDB on PostgreSQL is not the faster native default here** ("Storing and reading rows": the ratios
  are medians of per-run ratios in one session, one client, two cores). In every session so far FerretDB on
  PostgreSQL stored predictions and ETL rows at fewer rows/s than on SQLite while the database spent more CPU
  per stored row, and read the training rows at about the same speed (the ratio moved from run to run around
  1x). FerretDB's own CPU is about the same on either backend (the FerretDB share of the PostgreSQL column),
  so PostgreSQL's processes (WAL, heap and index writes, the checkpoint) come on top of it, where SQLite works
  inside FerretDB's process; PostgreSQL's data dir also ends larger (WAL included). What PostgreSQL could buy
  is several writers at once (SQLite takes one at a time), which this single-client benchmark does not
  measure and two cores leave little room for. Adopting it would add Debian's `postgresql-15` (25 MB to
  download and 85 MB installed on this image, which already had LLVM and ICU; about 65 MB and 270 MB on a
  minimal Debian; 13 s to install here) and a cluster per native stack (a new one, initdb and start, 0.7 to
  2.3 s; a restart 0.1 to 0.3 s, measured 2026-12-06), run as the `postgres` user under root. The native
  default stays SQLite; devstack's `FerretDB(backend="postgresql")` and `PostgreSQL` stay for measuring.
- **ETL ingest**: batching removes the per-call cost of `insert_one` (a round trip and a command each), but
  FerretDB still spends its own CPU on every stored document (its SQLite backend stores JSON), and the ETL
  writes two per row (the row and its pending mark, see `mlstack_core.rows`). SQLite has one writer, so most
  of that work is done one insert at a time (a second inserting client gains little, the `ours-2-threads`
  line): FerretDB's CPU seconds per run bound the ratio whatever the client does (the target table gives the
  bound, and the looser one if FerretDB could use both cores and the client were free). Rows without pending
  marks reach the "training fill" rate. `ours-endpoint` includes validation, forwarding to
  serving and serving storing the predictions of the same rows, all on the same two cores. (Until session
  20261127T045604 every ingest variant's time included a final `estimated_document_count`, which scans the
  collection on FerretDB: ours looked about half as fast as it is.)
- **Training load**: FerretDB spends about the same CPU per document whatever the client asks (projection or
  not), and that server time is most of the original's read; the client side is what we can change.
  `floor-load` shows FerretDB's own time, which bounds any client's speed-up. Memory is where the
  streaming numpy read wins clearly: no list of dicts, no DataFrame built from dicts.
- **Threaded workers** (`GUNICORN_THREADS`) keep Nginx's upstream connections open; on this machine they gave
  within a few percent of the sync workers' requests per second (more in some sessions, fewer in others) and a
  several times worse p99 at 8 clients (the GIL serialises the threads of a worker), so the service keeps sync
  workers by default. The Nginx template sets `keepalive_timeout 4s` on the
  upstream so that threaded workers are not held until `graceful_timeout` by idle upstream connections at
  shutdown (Gunicorn 26's gthread worker waits for every open connection)."""


def _tracing_section(summaries: list[dict[str, Any]]) -> list[str]:
    if not summaries:
        return ["## Traces: /predict with tracing off and on", "", "(not run yet: `bench/run.sh tracing`)", ""]
    s = summaries[-1]
    rows = [[label, s[name]["rps"], s[name]["p50_ms"], s[name]["p99_ms"], s[name]["errors"],
             f"{s[name]['app_cpu_s_per_1000']:.3f}", ", ".join(f"{load:.1f}" for load in s[name]["load"])]
            for name, label in (("untraced", "tracing off (default: nothing installed)"),
                                ("traced", "tracing on, every request sampled, exported to Jaeger"))]
    return ["## Traces: /predict with tracing off and on", "",
            f"Session {s['session']}: one-row `/predict` through Nginx, {s['clients']} wrk connections, "
            f"{s['workers']} Gunicorn workers, {s['runs']} interleaved runs of {s['run_seconds']:g} s per variant "
            "(medians), STORE_PREDICTIONS=false for both; Jaeger (memory storage) on the same two cores. "
            "`bench/tracing_bench.py` says how.", "",
            _table(["variant", "req/s", "p50 ms", "p99 ms", "errors", "app CPU s/1k req", "load at each run"], rows),
            "", f"Throughput with tracing on: {s['throughput_ratio']:.2f}x tracing off (median of per-run ratios).",
            ""]


def openloop_summary(runs: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """Medians per (variant, share of its maximum) of the open-loop runs."""
    by_key: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        by_key.setdefault((r["variant"], r["share"]), []).append(r)
    return {key: {"rate": median(r["rate"] for r in items),
                  "achieved_rps": median(r["achieved_rps"] for r in items),
                  **{f: median(r[f] for r in items if r[f] is not None) for f in ("p50_ms", "p99_ms", "p999_ms")},
                  # What Nginx saw (sessions before these were recorded have none): the request in Nginx, the app.
                  **{f: (median(values) if (values := [r[f] for r in items if r.get(f) is not None]) else None)
                     for f in ("nginx_p99_ms", "upstream_p99_ms")},
                  "p99_per_run": [r["p99_ms"] for r in items],
                  "errors": sum(r["errors"] for r in items), "requests": sum(r["requests"] for r in items),
                  "runs": len(items)}
            for key, items in by_key.items()}


def plot_openloop(runs: list[dict[str, Any]], path: Path = OPENLOOP_PLOT) -> Path | None:
    """p50, p99 and p99.9 against the offered rate, one line colour per variant (log latency)."""
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = openloop_summary(runs)
    fig, ax = plt.subplots(figsize=(10, 7))
    variants = [v for v in ORDER if any(k[0] == v for k in summary)]
    for i, variant in enumerate(variants):
        keys = sorted((k for k in summary if k[0] == variant), key=lambda k: k[1])
        rates = [summary[k]["rate"] for k in keys]
        for field, style in (("p50_ms", ":"), ("p99_ms", "-"), ("p999_ms", "--")):
            ax.plot(rates, [summary[k][field] for k in keys], style, marker="o", color=plt.cm.tab10(i),
                    label=f"{LABELS[variant]}, {field.removesuffix('_ms').replace('p999', 'p99.9')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate, requests/s (25/50/75/90% of each variant's maximum)")
    ax.set_ylabel("latency ms (corrected for coordinated omission)")
    ax.set_title("one-row predictions, open loop (oha -q)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tail_section(runs: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    title = "## Open-loop tail: what the p99 at 75% depends on"
    if not runs:
        return [title, "", "(not run yet: `bench/run.sh tail`)", ""]
    first = runs[0]
    session = next((r for r in records if r.get("bench") == "session" and r.get("session") == first["session"]), None)
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    rows = []
    for name in variants:
        mine = [r for r in runs if r["variant"] == name]
        p99 = [r["p99_ms"] for r in mine]
        rows.append([f"`{name}`", mine[0]["change"], median(r["p50_ms"] for r in mine), median(p99),
                     ", ".join(f"{v:.0f}" for v in p99),
                     _fmt(median(v for r in mine if (v := r.get("nginx_p99_ms")) is not None), 1),
                     _fmt(median(v for r in mine if (v := r.get("upstream_p99_ms")) is not None), 1),
                     f"{median(r['host_idle_share'] for r in mine):.0%}", sum(r["errors"] for r in mine)])
    return [title, "",
            f"Session {first['session']} ({first['time'][:16].replace('T', ' ')} UTC)"
            + (f", `python -m bench {' '.join(session['argv'])}`" if session else "")
            # Sessions before max_clients was recorded used 8, as the open-loop part does.
            + f": ours' maximum measured with oha (closed loop, {first.get('max_clients', 8)} keep-alive "
            "connections), then each variant of ours, "
            f"one change each, at {first['share']:.0%} of it ({first['rate']:,.1f} req/s offered) for "
            f"{first['run_seconds']:g} s, the variants taking turns within each of {first['runs']} runs, up to "
            f"{first['connections']} connections, latency corrected. \"in Nginx\" and \"app\" as above; host idle "
            "is the share of both cores left idle during the point.", "",
            _table(["variant", "change", "p50 ms", "p99 ms (median)", "p99 of each run", "p99 in Nginx ms",
                    "p99 app ms", "host idle", "errors"], rows), "",
            *([f"One registry check as a worker makes it (serving's `RegistryClient`, the serving user, "
               f"{check['checks']} in a row, same session): {check['mlflow_cpu_ms']:.1f} ms of the MLflow "
               f"server's CPU (behind its basic auth), {check['client_cpu_ms']:.1f} ms of the worker's, "
               f"{check['wall_ms']:.1f} ms wall.", ""]
              if (check := next((r for r in records if r.get("bench") == "registry-check"
                                 and r.get("session") == first["session"]), None)) else [])]



def _openloop_section(runs: list[dict[str, Any]], maxima: list[dict[str, Any]],
                      records: list[dict[str, Any]]) -> list[str]:
    title = "## Open-loop latency: one-row predictions at a constant arrival rate"
    if not runs:
        return [title, "", "(not run yet: `bench/run.sh openloop`)", ""]
    summary = openloop_summary(runs)
    first = runs[0]
    session = next((r for r in records if r.get("bench") == "session" and r.get("session") == first["session"]), None)
    rows = [[LABELS[v], f"{100 * share:.0f}%", s["rate"], s["achieved_rps"], s["p50_ms"], s["p99_ms"], s["p999_ms"],
             _fmt(s["nginx_p99_ms"], 1), _fmt(s["upstream_p99_ms"], 1), s["errors"], s["requests"]]
            for v in ORDER for share in sorted({k[1] for k in summary}) if (s := summary.get((v, share)))]
    max_text = "; ".join(f"{LABELS[m['variant']]} {m['rps']:,.1f} req/s" for m in maxima)
    loads = [r["load_start"] for r in runs]
    lines = [title, "",
             f"Session {first['session']} ({first['time'][:16].replace('T', ' ')} UTC)"
             + (f", `python -m bench {' '.join(session['argv'])}`" if session else "")
             + f": each variant's maximum measured first with {maxima[0].get('generator', 'wrk') if maxima else 'oha'}"
             f" ({maxima[0]['clients'] if maxima else 8} "
             f"keep-alive connections, closed loop, {first['run_seconds']:g} s: {max_text}), then oha (built from "
             f"crates.io by `bench/tools.sh oha`) sending one-row requests through Nginx at fixed shares of it "
             f"for {first['run_seconds']:g} s per point, {first['runs']} run(s), up to {first['connections']} "
             "connections, `-q RATE --latency-correction`: each request's latency counts from the time it was "
             "due, so queueing behind a slow answer shows (wrk's closed loop hides it). Same Gunicorn worker "
             f"count as benchmark 1 ({first['workers']} for ours and the original, 1 uvicorn worker for mlflow "
             f"serve). Load average at the start of the points: {min(loads):.1f} to {max(loads):.1f}.", "",
             "The p99 columns \"in Nginx\" and \"app\" come from the variant's Nginx access log over the same "
             "point: `$request_time` (from the request's first byte read to the answer's last byte sent) and "
             "`$upstream_response_time` (connect to the app, wait for a free worker, answer), in whole "
             "milliseconds. oha's p99 minus Nginx's is time before Nginx read the request or after it sent the "
             "answer: the load generator and the kernel, on the same two cores.", "",
             _table(["variant", "share of max", "offered req/s", "achieved req/s", "p50 ms", "p99 ms", "p99.9 ms",
                     "p99 in Nginx ms", "p99 app ms", "errors", "requests"], rows),
             "", "![latency vs offered rate](results/openloop.png)", ""]
    return lines
