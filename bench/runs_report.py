"""Tables for the runs benchmark (`bench.runs`); the JSON line it prints carries the same figures and more."""

from __future__ import annotations

from typing import Any

from bench.report import table

NOTES = """\
definitions:
  TTFC          time to first chunk: a viewer's receive of the run's first `chunk` - the moment its POST /v1/runs was
                written (the scripted model says its first token at once). R=1: one run at a time, --single in a row.
  pub->recv     every delivered event: viewer receive wall time - the event's `timestamp` (set when the agent made it).
  length x      (viewer's receive of the terminal event - POST) / the model's own time ((tokens - 1) x delay).
  log x         (terminal event sent by the worker - run created by the gateway) / the model's own time: the
                worker's pick-up and pace, without the gateway's delivery.
  us/ev         CPU per published event (every entry of every run's log): worker processes from /proc/<pid>/stat,
                Redis from INFO cpu; cmds/ev from INFO commandstats (commands run inside scripts included).
  CPU s/1k ev   CPU seconds per 1,000 published events, per process kind (load = the viewers' own processes).
  busy %        the whole machine's busy time over the cell (both cores): near 100 = the box was the limit.
  capacity      one worker process: the largest R (runs at once, 1 viewer) whose median log x <= ratio.
  R=1 rows      one run at a time: per-event CPU there is mostly the processes' idle cost spread over few events."""

TARGETS = [
    # (R, V, key, limit, label)
    (1, 1, "ttfc_p50_ms", 10.0, "one run at a time: TTFC p50 <= 10 ms"),
    (200, 1, "ttfc_p50_ms", 30.0, "200 runs: TTFC p50 <= 30 ms"),
    (200, 1, "ttfc_p99_ms", 150.0, "200 runs: TTFC p99 <= 150 ms"),
    (200, 1, "latency_p99_ms", 50.0, "200 runs: publish -> receive p99 <= 50 ms"),
    (200, 1, "length_ratio_p50", 1.05, "200 runs: run length <= 1.05x the model's"),
    (200, 1, "worker_us_per_event", 40.0, "200 runs: worker <= 40 us CPU per event"),
    (200, 1, "redis_us_per_event", 20.0, "200 runs: Redis <= 20 us CPU per event"),
]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _r(cell: dict[str, Any]) -> str:
    return "1 (seq)" if cell["runs"] == 1 else f"{cell['runs']:,}"


def main_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for c in cells:
        if "error" in c:
            rows.append([c["design"], _r(c), str(c["viewers"]), *(["-"] * 13), "FAILED"])
            continue
        rows.append(
            [
                c["design"],
                _r(c),
                str(c["viewers"]),
                _fmt(c["ttfc_p50_ms"]),
                _fmt(c["ttfc_p99_ms"]),
                _fmt(c["latency_p50_ms"]),
                _fmt(c["latency_p99_ms"]),
                _fmt(c["length_ratio_p50"], 3),
                _fmt(c["length_ratio_p99"], 3),
                _fmt(c.get("log_ratio_p50"), 3),
                _fmt(c["worker_us_per_event"]),
                _fmt(c["redis_us_per_event"]),
                _fmt(c["redis_cmds_per_event"], 2),
                f"{c['runs_exact']:,}/{c['runs_created']:,}",
                f"{c['viewers_complete']:,}/{c['viewers_total']:,}",
                _fmt(c["host_busy_pct"], 0),
                "ok" if c.get("ok") else "NOT EXACT",
            ]
        )
    return rows


MAIN_HEADERS = ["design", "R", "V", "TTFC p50", "TTFC p99", "pub->recv p50", "p99", "length x p50", "x p99"]
MAIN_HEADERS += ["log x p50"]
MAIN_HEADERS += ["worker us/ev", "redis us/ev", "cmds/ev", "exact runs", "viewers", "busy %", ""]


def cpu_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for c in cells:
        per_k = c.get("cpu_s_per_1k_events")
        if not per_k:
            continue
        rows.append(
            [c["design"], _r(c), str(c["viewers"]), _fmt(c["events_per_s"], 0)]
            + [_fmt(per_k.get(kind), 4) for kind in ("gateway", "worker", "redis", "load")]
        )
    return rows


def command_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for c in cells:
        if c.get("runs") != 200 or c.get("viewers") != 1 or "redis_cmds" not in c:
            continue
        events = max(c["events"], 1)
        top = ", ".join(f"{name} {calls / events:.2f}" for name, calls in list(c["redis_cmds"].items())[:8])
        rows.append([c["design"], "calls", top])
        usec = ", ".join(f"{name} {us / events:.1f}" for name, us in list(c.get("redis_usec", {}).items())[:6])
        rows.append(["", "us", usec])
    return rows


def capacity_rows(capacities: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for cap in capacities:
        trials = ", ".join(
            f"{t['runs']}: x{_fmt(t['log_ratio_p50'], 3)}{'' if t['passed'] else ' (no)'}" for t in cap["trials"]
        )
        rows.append([cap["design"], _fmt(cap["capacity_runs"]), _fmt(cap["first_failing"]), trials])
    return rows


def target_lines(cells: list[dict[str, Any]]) -> list[str]:
    by_key = {(c["design"], c["runs"], c["viewers"]): c for c in cells}
    lines = []
    for runs, viewers, key, limit, label in TARGETS:
        cell = by_key.get(("after", runs, viewers))
        if cell is None or cell.get(key) is None:
            continue
        value = cell[key]
        verdict = "met" if value <= limit else f"MISSED by {value - limit:,.2f} ({value / limit:.2f}x the target)"
        lines.append(f"  {label}: {value:,} -> {verdict}")
    for cell in cells:
        if cell["design"] == "after" and cell["runs"] >= 1000:
            exact = cell.get("ok")
            lines.append(
                f"  {cell['runs']:,} runs x {cell['viewers']}: "
                f"{'every run complete and exact' if exact else 'NOT every run complete and exact'}"
            )
    return lines


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    designs = ", ".join(f"{name} = {label}" for name, label in result["designs"].items())
    s = result["settings"]
    parts = [
        f"runcast runs benchmark: {env['cpus']} CPUs, load at start {env['loadavg_at_start']}, "
        f"{result['elapsed_s']} s; {s['workers']} workers, {s['tokens']} tokens at {s['delay_ms']} ms "
        f"(model {(s['tokens'] - 1) * s['delay_ms']} ms), medians of {s['repeat']}; {designs}",
        "",
        "latency and cost per event (ms unless noted)",
        table(MAIN_HEADERS, main_rows(result["cells"])),
        "",
        "CPU seconds per 1,000 published events, per process kind",
        table(["design", "R", "V", "events/s", "gateway", "worker", "redis", "load"], cpu_rows(result["cells"])),
    ]
    commands = command_rows(result["cells"])
    if commands:
        parts += [
            "",
            "Redis per published event, R=200 V=1 (us: time inside each command; a script's includes its calls)",
            table(["design", "", "command: per event"], commands),
        ]
    if result.get("capacity"):
        parts += [
            "",
            f"capacity of one worker process at {1000 / s['delay_ms']:g} tokens/s, median log x <= "
            f"{s['capacity_ratio']}x",
            table(
                ["design", "capacity R", "first failing R", "trials (R: log x p50)"],
                capacity_rows(result["capacity"]),
            ),
        ]
    for cell in result["cells"]:
        profile = cell.get("profile")
        if profile and "self" in profile:
            parts += [
                "",
                f"worker profile (py-spy, first worker), {cell['design']} R={cell['runs']}: "
                f"{profile['samples']} samples; self % | inclusive %",
            ]
            parts += [f"  {share:5.1f}  {name}" for name, share in profile["self"]]
            parts += ["  inclusive:"] + [f"  {share:5.1f}  {name}" for name, share in profile["inclusive"]]
    targets = target_lines(result["cells"])
    if targets:
        parts += ["", "targets (design `after`):", *targets]
    parts += ["", NOTES]
    return "\n".join(parts)
