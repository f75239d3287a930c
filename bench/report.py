"""Human-readable tables for the fan-out benchmark's result (the JSON line carries the same figures and more)."""

from __future__ import annotations

from typing import Any

LABELS = ["mode", "feed", "cell", "viewers", "runs", "procs"]
STEADY_HEADERS = [*LABELS, "connected", "offered/s", "delivered/s", "p50 ms", "p99 ms", "max ms", "cmds/ev"]
STEADY_HEADERS += ["read/ev", "gw p99 ms", "gw us/dlv", "load us/dlv", "CPU %", "others %", "drained"]
RUNS_HEADERS = ["mode", "feed", "runs", "procs", "ev/s/run", "offered/s", "delivered/s", "p50 ms", "p99 ms"]
RUNS_HEADERS += ["gw us/dlv", "redis us/ev", "follow us/ev", "reads/ev", "us/read", "CPU %", "others %", "complete"]
RATIO_HEADERS = ["cell", "viewers", "procs", "steady delivered/s hub÷naive", "burst delivered/s hub÷naive"]
RATIO_HEADERS += ["p50 naive÷hub", "p99 naive÷hub", "cmds/ev hub / naive", "gw us/dlv naive÷hub"]
RATIO_HEADERS += ["redis us/ev naive÷hub"]
LOAD_BOUND_PCT = 85.0
OTHERS_NOISY_PCT = 25.0
"""A load process above this CPU share may be what limits the figures, not the gateway."""

NOTES = """\
definitions:
  delivered/s   deliveries of a phase's events / (last viewer's receive of one of them - the phase's first publish);
                offered/s = rate x connected viewers. steady = --rate ev/s per run for --duration s; burst = the
                events per run shown, appended back to back (throughput under saturation; no latency quoted).
  p50/p99/max   publish -> receive latency of every steady-phase delivery (no sampling): the viewer's receive wall
                time minus the event's `timestamp` (set just before StreamLog.append), 20 us buckets, same host clock.
  cmds/ev       Redis commands per published event over the phase incl. its drain, from INFO commandstats deltas
                (the harness's INFO/PING probes excluded). It INCLUDES the publish itself: the EVALSHA of the append
                script and the commands the script runs (HGET, XADD, HSET, 2x EXPIRE), measured per cell with no
                viewer attached ("publisher cmds/ev" in the JSON). read/ev = cmds/ev minus that: the gateway's share.
  gw p99 ms     the gateway's own share of the latency: its runcast_hub_delivery_lag_seconds histogram (entry id's
                millisecond timestamp -> the moment the hub hands the event to the viewer's connection), p99 as the
                bucket bound it falls under; one gateway process, hub only. The rest of p99 is Redis, the socket
                and the load processes (on a 2-core box they share the cores with the gateway).
  gw us/dlv     gateway CPU (all its processes) over the phase / deliveries: the cost of one delivered event.
  load us/dlv   the same for the load processes (the harness's viewers): what receiving costs them.
  redis us/ev   redis-server CPU over the phase / events published: the append itself plus every read any gateway
                made; reads/ev = stream reads (XREAD, XRANGE, XREVRANGE) per event; us/read = Redis' own time per
                read call (INFO commandstats usec / calls): what a read costs the server as runs followed grow.
  follow us/ev  Redis' own time (commandstats usec) per event spent keeping gateways informed: stream reads plus
                the append script's PUBLISH/SPUBLISH. Unlike redis us/ev it leaves out the append itself and the
                server's fixed cost (cron, the harness's probes), which dominate at low event rates.
  runs cells    R runs x 1 viewer each, published together (one pipelined round of appends per tick).
  procs         gateway processes (`runcast gateway --workers N`).
  KiB/viewer    (gateway VmRSS after connecting N idle viewers - before) / N, fresh gateway per cell.
  CPU %         of one core over the phase: gateway process / redis-server / busiest load process.
  others %      CPU used outside the benchmark (machine busy time minus gateway, redis, load processes and
                publisher), % of one core: other jobs on a shared box. Well above 0: the figures understate the gateway.
  complete      viewers that received exactly the run's events (count and id sum equal to the publisher's tally,
                ids strictly increasing, no reset) through the terminal event."""


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, int | float):
        return f"{round(value):,}"
    return str(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def _cpu(phase: dict[str, Any]) -> str:
    loads = phase.get("load_cpu_pct") or [0.0]
    flag = "!" if max(loads) > LOAD_BOUND_PCT else ""
    return f"{phase['gateway_cpu_pct']:.0f}/{phase['redis_cpu_pct']:.0f}/{max(loads):.0f}{flag}"


def _label(cell: dict[str, Any]) -> list[str]:
    labels = [cell["mode"], cell["feed"], cell["kind"], _fmt(cell["viewers"]), _fmt(cell["runs"])]
    return [*labels, _fmt(cell.get("workers", 1))]


def steady_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for cell in cells:
        s = cell.get("steady")
        if s is None:
            rows.append([*_label(cell), _fmt(cell.get("connected")), *(["-"] * 12), "FAILED"])
            continue
        rows.append(
            [
                *_label(cell),
                _fmt(cell["connected"]),
                _fmt(s["offered_deliveries_per_s"]),
                _fmt(s["deliveries_per_s"]),
                _fmt(s["p50_ms"], 2),
                _fmt(s["p99_ms"], 2),
                _fmt(s["max_ms"], 1),
                _fmt(s["redis_cmds_per_event"], 1),
                _fmt(s["read_cmds_per_event"], 1),
                f"≤{_fmt(s['hub_lag_p99_ms'], 1)}" if s.get("hub_lag_p99_ms") is not None else "-",
                _fmt(s.get("gateway_us_per_delivery"), 1),
                _fmt(s.get("load_us_per_delivery"), 1),
                _cpu(s),
                _fmt(s["others_cpu_pct"]),
                "yes" if s["drained"] else f"NO ({s['viewers_behind']} behind)",
            ]
        )
    return rows


def runs_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for cell in cells:
        s = cell.get("steady")
        complete = f"{cell.get('complete', 0):,}/{cell['viewers']:,}" + ("" if cell.get("ok") else " FAILED")
        labels = [cell["mode"], cell["feed"], _fmt(cell["runs"]), _fmt(cell.get("workers", 1)), _fmt(cell["rate"], 1)]
        if s is None:
            rows.append([*labels, *(["-"] * 12), complete])
            continue
        rows.append(
            [
                *labels,
                _fmt(s["offered_deliveries_per_s"]),
                _fmt(s["deliveries_per_s"]),
                _fmt(s["p50_ms"], 2),
                _fmt(s["p99_ms"], 2),
                _fmt(s.get("gateway_us_per_delivery"), 1),
                _fmt(s.get("redis_us_per_event"), 1),
                _fmt(s.get("follow_us_per_event"), 2),
                _fmt(s.get("read_calls_per_event"), 3),
                _fmt(s.get("read_us_per_call"), 1),
                _cpu(s),
                _fmt(s["others_cpu_pct"]),
                complete,
            ]
        )
    return rows


def memory_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for cell in cells:
        b = cell.get("burst")
        complete = f"{cell.get('complete', 0):,}/{cell['viewers']:,}"
        if not cell.get("ok"):
            complete += " FAILED"
        rows.append(
            [
                *_label(cell),
                _fmt(b["events_per_run"]) if b else "-",
                _fmt(b["deliveries_per_s"]) if b else "-",
                _cpu(b) if b else "-",
                _fmt(b["others_cpu_pct"]) if b else "-",
                _fmt(cell.get("rss_per_viewer_kib"), 1),
                _fmt(cell.get("gateway_fds")),
                complete,
            ]
        )
    return rows


def _key(cell: dict[str, Any]) -> tuple[str, int, int]:
    return cell["kind"], cell["viewers"], cell.get("workers", 1)


def ratio_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    by_key = {(*_key(c), c["mode"]): c for c in cells}
    rows = []
    for (kind, viewers, workers, mode), hub in by_key.items():
        naive = by_key.get((kind, viewers, workers, "naive"))
        if mode != "hub" or naive is None or "steady" not in hub or "steady" not in naive:
            continue
        hs, ns = hub["steady"], naive["steady"]
        hb, nb = hub.get("burst"), naive.get("burst")
        rows.append(
            [
                kind,
                _fmt(viewers),
                _fmt(workers),
                _ratio(hs["deliveries_per_s"], ns["deliveries_per_s"]),
                _ratio(hb["deliveries_per_s"], nb["deliveries_per_s"]) if hb and nb else "-",
                _ratio(ns["p50_ms"], hs["p50_ms"]),
                _ratio(ns["p99_ms"], hs["p99_ms"]),
                f"{hs['redis_cmds_per_event']:.1f} / {ns['redis_cmds_per_event']:.1f}",
                _ratio(ns.get("gateway_us_per_delivery"), hs.get("gateway_us_per_delivery")),
                _ratio(ns.get("redis_us_per_event"), hs.get("redis_us_per_event")),
            ]
        )
    return rows


BASELINE_HEADERS = ["cell", "viewers", "runs", "procs", "p50 ms base → hub", "p99 ms base → hub"]
BASELINE_HEADERS += ["gw us/dlv base → hub", "redis us/ev base → hub", "follow us/ev base → hub"]
BASELINE_HEADERS += ["reads/ev base → hub", "burst dlv/s base → hub"]


def baseline_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    """Each hub cell next to the same cell on the baseline build (`--baseline`): before → after."""
    by_key = {(*_key(c), c["mode"]): c for c in cells}
    rows = []
    for (kind, viewers, workers, mode), hub in by_key.items():
        base = by_key.get((kind, viewers, workers, "base"))
        if mode != "hub" or base is None or "steady" not in hub or "steady" not in base:
            continue
        hs, bs = hub["steady"], base["steady"]

        def pair(key: str, digits: int = 1, h: dict[str, Any] = hs, b: dict[str, Any] = bs) -> str:
            return f"{_fmt(b.get(key), digits)} → {_fmt(h.get(key), digits)}"

        hb, bb = hub.get("burst"), base.get("burst")
        burst = f"{_fmt(bb['deliveries_per_s'])} → {_fmt(hb['deliveries_per_s'])}" if hb and bb else "-"
        rows.append(
            [
                kind,
                _fmt(viewers),
                _fmt(hub["runs"]),
                _fmt(workers),
                pair("p50_ms", 2),
                pair("p99_ms", 2),
                pair("gateway_us_per_delivery"),
                pair("redis_us_per_event"),
                pair("follow_us_per_event", 2),
                pair("read_calls_per_event", 3),
                burst,
            ]
        )
    return rows


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def warnings(cells: list[dict[str, Any]]) -> list[str]:
    out = []
    for cell in cells:
        where = f"{cell['mode']} {cell['kind']} N={cell['viewers']:,}"
        if cell.get("error"):
            out.append(f"{where}: {cell['error']}")
        if cell.get("problems"):
            out.append(f"{where}: viewers with problems: {cell['problems']}")
        for name in ("steady", "burst"):
            phase = cell.get(name)
            if phase and max(phase.get("load_cpu_pct") or [0.0]) > LOAD_BOUND_PCT:
                out.append(f"{where} {name}: a load process was above {LOAD_BOUND_PCT:.0f}% CPU: harness-bound?")
            if phase and phase["others_cpu_pct"] > OTHERS_NOISY_PCT and phase["host_busy_pct"] > 90:
                out.append(
                    f"{where} {name}: the machine was saturated and other processes took {phase['others_cpu_pct']:.0f}%"
                    " of a core: these figures understate the gateway (rerun on a quiet machine)"
                )
    by_key = {(*_key(c), c["mode"]): c for c in cells}
    for (kind, viewers, workers, mode), hub in by_key.items():
        naive = by_key.get((kind, viewers, workers, "naive"))
        if kind == "load" and mode == "hub" and naive and "steady" in hub and "steady" in naive and viewers >= 100:
            h, n = hub["steady"]["read_cmds_per_event"], naive["steady"]["read_cmds_per_event"]
            if h >= 0.5 * n:
                out.append(
                    f"N={viewers:,}: hub reads with {h:.1f} Redis commands/event vs naive {n:.1f}: the hub read path"
                    " does not look active in this build (is RUNCAST_FEED=hub implemented?)"
                )
    return out


def render(result: dict[str, Any]) -> str:
    cells = result["cells"]
    env = result["environment"]
    parts = [
        f"runcast fan-out benchmark: {env['cpus']} CPUs, load at start {env['loadavg_at_start']}, "
        f"nofile {env['nofile_soft']}/{env['nofile_hard']}, somaxconn {env['somaxconn']}, {result['elapsed_s']} s",
        "",
    ]
    one_run = [cell for cell in cells if cell["kind"] != "runs"]
    many_runs = [cell for cell in cells if cell["kind"] == "runs"]
    if one_run:
        parts += [
            "steady phase (latency)          CPU % = gateway/redis/busiest load process (! = it may be the limit)",
            table(STEADY_HEADERS, steady_rows(one_run)),
            "",
            "burst phase (throughput) and memory",
            table(
                [*LABELS, "burst ev/run", "delivered/s", "CPU %", "others %", "KiB/viewer", "gateway fds", "complete"],
                memory_rows(one_run),
            ),
        ]
    if many_runs:
        parts += [
            "",
            "many runs, one viewer each (steady phase): cost per followed run",
            table(RUNS_HEADERS, runs_rows(many_runs)),
        ]
    ratios = ratio_rows(cells)
    if ratios:
        parts += [
            "",
            "hub vs naive",
            table(
                RATIO_HEADERS,
                ratios,
            ),
        ]
    before_after = baseline_rows(cells)
    if before_after:
        parts += ["", "baseline build (--baseline) vs this one, same cells", table(BASELINE_HEADERS, before_after)]
    notes = warnings(cells)
    if notes:
        parts += ["", "WARNINGS:", *(f"  - {note}" for note in notes)]
    parts += ["", NOTES]
    return "\n".join(parts)
