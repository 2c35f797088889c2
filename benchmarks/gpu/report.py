"""The GPU measurement's summary (``measure.py``) as Markdown, and the values its goals test."""

from __future__ import annotations

from collections.abc import Iterator


def goal_values(goal: str, parts: dict) -> Iterator[tuple[str, float | None]]:
    """(where, value) pairs that ``goal`` is judged on; value None when not measured."""
    if goal == "star_over_adam":
        yield "optimizer_step", parts.get("optimizer_step", {}).get("star_over_adam")
    elif goal == "pes_over_adam":
        rows = parts.get("meta_train", {}).get("rows", [])
        if not rows:
            yield "meta_train", None
        for row in rows:
            yield f"P={row['pairs']} kernel", row["ratio_kernel"]
            yield f"P={row['pairs']} end to end", row["ratio_end_to_end"]
    elif goal == "workers_8_over_1":
        speedups = parts.get("service", {}).get("speedup_over_1_worker", {})
        value = speedups.get("8", speedups.get(8))
        yield "service", value


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _optimizer_step(part: dict) -> list[str]:
    if "median_ms" not in part:
        return []
    lines = ["| optimizer | median step (ms) | state bytes/param |", "|---|---:|---:|"]
    for name, ms in part["median_ms"].items():
        lines.append(f"| {name} | {ms:.3f} | {part['state_bytes_per_param'][name]:.1f} |")
    lines.append(
        f"\nSTAR/Adam = {part['star_over_adam']:.2f}, "
        f"STAR/Blackbox = {part['star_over_blackbox']:.2f} ({part['rounds']} interleaved rounds)"
    )
    return lines


def _meta_train(part: dict) -> list[str]:
    if not part.get("rows"):
        return []
    lines = [
        "| P | K | PES steps/s (e2e) | Adam steps/s (e2e) | ratio | PES steps/s (kernel) "
        "| Adam steps/s (kernel) | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in part["rows"]:
        lines.append(
            f"| {r['pairs']} | {r['K']} | {r['pes_end_to_end']:.0f} | {r['adam_end_to_end']:.0f} "
            f"| {r['ratio_end_to_end']:.2f} | {r['pes_kernel']:.0f} | {r['adam_kernel']:.0f} "
            f"| {r['ratio_kernel']:.2f} |"
        )
    return lines


def _service(part: dict) -> list[str]:
    lines = [f"Ray resources: {part['ray']}"] if "ray" in part else []
    if not part.get("rows"):
        return lines
    lines += [
        "",
        "| workers | inner steps/s | x 1 worker | measured steps | seconds | start-up s "
        "| Job.device | worker platforms | notes |",
        "|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    speedups = part.get("speedup_over_1_worker", {})
    for r in part["rows"]:
        speedup = speedups.get(str(r["workers"]), speedups.get(r["workers"]))
        platforms = ", ".join(sorted(set(r.get("worker_platforms", {}).values()))) or "-"
        notes = "; ".join(str(r[k]) for k in ("error", "ended", "cut") if k in r)
        lines.append(
            f"| {r['workers']} | {_fmt(r.get('steps_per_s'), 0)} | {_fmt(speedup)} "
            f"| {_fmt(r.get('measured_steps'))} | {_fmt(r.get('seconds'), 1)} "
            f"| {_fmt(r.get('startup_s'), 1)} | {r['device'] or '-'} | {platforms} | {notes} |"
        )
    devices = {r["device"] for r in part["rows"]}
    platforms = {p for r in part["rows"] for p in r.get("worker_platforms", {}).values()}
    for what, seen, expected in (
        ("Job.device of every job", devices, part["expected_device"]),
        ("JAX platform of every worker", platforms, part["expected_worker_platform"]),
    ):
        verdict = "ok" if seen == {expected} else "WRONG"
        lines.append(f"\n{what}: {sorted(seen)} (expected {expected!r}: {verdict})")
    return lines


def _tests(part: dict) -> list[str]:
    if "counts" not in part:
        return []
    lines = [
        f"`{part['command']}`: exit {part['exit']}; {part['pytest_summary'] or 'no summary line'}",
        f"counts: {part['counts']}",
        f"failed, needing tensorflow-datasets (absent there): "
        f"{len(part['failed_needing_tensorflow_datasets'])}",
        f"failed otherwise: {len(part['failed_other'])}",
    ]
    lines += [f"- {test}: {reason}" for test, reason in part["failed_other"].items()]
    return lines


SECTIONS = {
    "optimizer_step": _optimizer_step,
    "meta_train": _meta_train,
    "service": _service,
    "tests": _tests,
}


def markdown(summary: dict) -> str:
    """The whole summary as Markdown: machine, goals, then one section per part."""
    lines = [f"# GPU workers: {summary['platform']} platform, size {summary['size']}", ""]
    lines += [f"- {key}: {value}" for key, value in summary["machine"].items()]
    lines += ["", "## Goals (for one H200)", "", "| goal | where | value | target | |"]
    lines.append("|---|---|---:|---|---|")
    from sizes import GOALS

    for goal in summary.get("goals", []):
        label, target, higher = GOALS[goal["goal"]]
        sign = ">=" if higher else "<="
        lines.append(
            f"| {label} | {goal['where']} | {_fmt(goal['value'])} | {sign} {target} "
            f"| {goal['verdict']} |"
        )
    for name, part in summary["parts"].items():
        lines += ["", f"## {name}", "", f"{part['status']}, {part.get('seconds', 0)} s"]
        if "devices" in part:
            lines.append(f"JAX: {part['devices']}")
        lines += [""] + SECTIONS[name](part)
    return "\n".join(lines) + "\n"
