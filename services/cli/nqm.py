"""``star nqm``: the noisy quadratic model analysis of the paper's Section 4.

``star nqm figures --out DIR`` reproduces Figures 1 and 2 (PNG + JSON, see
``star_core.nqm.figures``) and prints where they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("nqm", help="noisy quadratic model analysis (paper Section 4)")
    nqm_commands = parser.add_subparsers(dest="nqm_command", metavar="SUBCOMMAND", required=True)
    figures = nqm_commands.add_parser(
        "figures", help="reproduce Figures 1 and 2 as PNG + JSON (about 1-2 minutes on 2 cores)"
    )
    figures.add_argument("--out", type=Path, required=True, help="output folder (created)")
    figures.add_argument("--seed", type=int, default=0, help="seed of the problem and samples")
    figures.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    figures.set_defaults(handler=run_figures)


def run_figures(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from star_core.nqm.figures import FigureSettings, prepare_output_dir, write_figures

    out = prepare_output_dir(args.out)  # fails with one line before any work starts
    settings = FigureSettings.quick() if args.quick else FigureSettings()
    settings = FigureSettings(**{**settings.__dict__, "seed": args.seed})
    with tqdm(total=settings.num_steps(), desc="nqm figures", unit="step") as bar:

        def progress(stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update(1)

        paths = write_figures(out, settings, progress)
    print(f"wrote {len(paths)} files to {out}/:")
    for path in paths:
        print(f"  {path}")
    return 0
