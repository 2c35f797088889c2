"""Printing and plotting the figures of ``cluster_scaling.py`` (one row per job, the efficiency
table with its targets, the efficiency plot)."""

from __future__ import annotations

from pathlib import Path

TARGETS = {0.25: 0.8, 2.0: 0.9}  # estimate cost (s) -> efficiency target at 64 workers
RAY_KINDS_SHOWN = 6  # Ray processes (by program) printed per job, most CPU first


def print_row(label: str, row: dict) -> None:
    cpu = ", ".join(f"{k} {_ms(v)}" for k, v in row["cpu_ms_per_step"].items())
    print(
        f"  {label}: {row['estimates_per_s']:.2f} estimates/s, {1e3 * row['step_s']:.0f} ms per"
        f" outer step (learner's own figure {1e3 * row['learner_step_s']:.0f}), CPU ms per"
        f" step: {cpu}; start-up {row['startup_s']:.0f} s, load {row['load'][0]:.1f}"
        f"-{row['load'][1]:.1f}, cluster PSS {row['pss_mb']:.0f} MB; worker restarts"
        f" {row['worker_restarts']}, stale estimates {row['stale_dropped']}",
        flush=True,
    )
    top = list(row["ray_cpu_ms_per_step"].items())[:RAY_KINDS_SHOWN]
    print("    Ray's CPU ms per step: " + ", ".join(f"{k} {_ms(v)}" for k, v in top), flush=True)
    for phase, share in row.get("profile", {}).items():
        print(f"    {share:6.1%} {1e3 * share * row['step_s']:7.1f} ms  {phase}", flush=True)


def report(results: dict, args) -> None:
    """The Markdown table of every cost: efficiency, throughput over N / cost (the ideal), and
    the wall time of an outer step; then the targets at the largest N."""
    head = " | ".join(f"{c} s: efficiency | of N / cost | ms per step" for c in args.costs)
    print(f"\n| N | {head} |")
    print("|---:" + "|---:|---:|---:" * len(args.costs) + "|")
    for n in args.workers:
        cells = []
        for cost in args.costs:
            row = results[str(cost)].get(str(n))
            if row is None:
                cells.append("- | - | -")
                continue
            ms = 1e3 * row["step_s"]
            cells.append(f"{row['efficiency']:.2f} | {row['of_ideal']:.2f} | {ms:.0f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    top = str(max(args.workers))
    for cost in args.costs:
        target = TARGETS.get(cost)
        row = results[str(cost)].get(top)
        if target is None or row is None:
            continue
        verdict = "met" if row["efficiency"] >= target else "missed"
        figure = f"{row['efficiency']:.2f}"
        print(f"{cost} s estimates at N = {top}: {figure} (target >= {target}: {verdict})")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cost, rows in results.items():
        ns = sorted(int(n) for n in rows)
        ax.plot(
            ns, [rows[str(n)]["efficiency"] for n in ns], marker="o", label=f"{cost} s estimates"
        )
        if float(cost) in TARGETS:
            ax.axhline(TARGETS[float(cost)], linestyle=":", color=ax.lines[-1].get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers N")
    ax.set_ylabel("efficiency = throughput(N) / (N x throughput(1))")
    ax.set_ylim(0, 1.1)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"
