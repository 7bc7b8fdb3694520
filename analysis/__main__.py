"""`python -m analysis {collect,tables,importance,plots,rankme,rungs,agreement} ...`: results.

    python -m analysis collect ~/wsl_ray_results/wmse [more experiments] --out all.parquet
    python -m analysis tables all.parquet --kind paper|top|seeds [--format markdown|latex|csv]
    python -m analysis importance ~/wsl_ray_results/wmse [--metric val_acc_knn]
    python -m analysis plots ~/wsl_ray_results/wmse --out plots/
    python -m analysis rankme ~/wsl_ray_results/wmse
    python -m analysis rungs ~/wsl_ray_results/wmse
    python -m analysis agreement ~/wsl_ray_results/wmse

Every source is an experiment folder (a local path or a URI such as s3://bucket/wmse) or
a Parquet file: a sweep's own results.parquet or one written by `collect`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from wsl_ray.sweep.agreement import MIN_TAU, REFERENCE, agreement_rows
from wsl_ray.sweep.bill import bill_line
from wsl_ray.sweep.metrics import DEFAULT_METRIC
from wsl_ray.sweep.summary import rung_title
from wsl_ray.utils.cli import Parser, command_name

from . import plots, tables
from .collect import CollectError, bills, check_columns, load, read_space, sweep_metric, write
from .importance import check_evaluator, importances, stored_study, study_importances

AGREEMENT_NOTE = (
    f"Kendall's tau-b with its 95% interval (Fisher z, variance 0.437/(n-4)) of each label-free "
    f"metric, oriented so that + agrees, against {REFERENCE}: at the final epoch over the "
    f"TERMINATED trials, at each earlier evaluated epoch over the trials that reached it (at "
    f"least {MIN_TAU}). Regret: {REFERENCE} and test_acc_knn of the trial the metric picks "
    "among the TERMINATED ones, minus the best of each there (points)."
)
METRIC_HELP = f"selection metric (default: the sweep's, from its sweep.json; else {DEFAULT_METRIC})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=command_name(__package__), description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="experiment folders -> one Parquet table")
    c.add_argument("experiments", nargs="+")
    c.add_argument("--out", default="trials.parquet")
    t = sub.add_parser("tables", help="paper-style tables")
    t.add_argument("sources", nargs="+")
    t.add_argument("--kind", choices=("paper", "top", "seeds"), default="paper")
    t.add_argument(
        "--metric",
        default=None,
        help="selection metric, a metric column of the table (paper: val_acc; top: the sweep's)",
    )
    t.add_argument("--top", type=int, default=10)
    t.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    i = sub.add_parser("importance", help="hyperparameter importances of one experiment")
    i.add_argument("experiment")
    i.add_argument("--metric", default=None, help=METRIC_HELP)
    i.add_argument("--evaluator", choices=("ped-anova", "fanova"), default="ped-anova")
    i.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    p = sub.add_parser("plots", help="PNG plots of one experiment")
    p.add_argument("experiment")
    p.add_argument("--metric", default=None, help=METRIC_HELP)
    p.add_argument("--out", default="plots")
    r = sub.add_parser("rankme", help="RankMe against validation accuracy, and its test gap")
    r.add_argument("source")
    r.add_argument("--metric", default=None, help=METRIC_HELP)
    r.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    g = sub.add_parser(
        "rungs", help="rank correlation of each evaluated epoch's metric with the final one"
    )
    g.add_argument("source")
    g.add_argument("--metric", default=None, help=METRIC_HELP)
    g.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    a = sub.add_parser(
        "agreement",
        help="each label-free metric against val_acc_knn: Kendall's tau per epoch, regret",
    )
    a.add_argument("experiment", help="an experiment folder or its results.parquet")
    a.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    return parser


def check_out(out: str, folder: bool) -> None:
    """Raises ValueError, before any work, when --out cannot be written: a local file needs
    an existing writable folder, a folder is created (URIs are left to their filesystem)."""
    if "://" in out:
        return
    path = Path(out).expanduser()
    if folder:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"--out {out}: cannot create this folder ({err.strerror})") from None
    parent = path if folder else path.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or path.is_dir() and not folder:
        raise ValueError(f"--out {out}: cannot write a file there")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tables" and args.top < 1:
            raise ValueError(f"--top {args.top}: show at least 1 trial")
        if args.command in ("collect", "plots"):
            check_out(args.out, folder=args.command == "plots")
        if args.command == "collect":
            table = load(args.experiments)
            write(table, args.out)
            print(
                f"{table.num_rows} trials from {len(args.experiments)} experiment(s) -> {args.out}"
            )
        elif args.command == "tables":
            table = load(args.sources)
            tests = dict.fromkeys(("test_acc", "test_acc_knn"), f"--kind {args.kind} reads")
            if args.kind == "paper":
                metric = args.metric or "val_acc"
                check_columns(table, args.sources, {metric: "--metric"} | tests)
                rows = tables.paper_table(table, metric)
                print(
                    f"trial with the best {metric} per method and dataset: test linear top-1 / "
                    "5-NN (%)"
                )
            elif args.kind == "top":
                metric = args.metric or sweep_metric(args.sources, table) or DEFAULT_METRIC
                check_columns(table, args.sources, {metric: "--metric"})
                rows = tables.top_trials(table, metric, args.top)
            else:
                check_columns(table, args.sources, tests)
                rows = tables.seed_table(table)
            print(tables.render(rows, args.format))
            if args.format == "markdown":  # csv and latex stay the table alone
                for name, bill in bills(table).items():
                    print(f"{name} {bill_line(bill)}")
        elif args.command == "importance":
            check_evaluator(args.evaluator)
            args.metric = args.metric or sweep_metric(args.experiment) or DEFAULT_METRIC
            study, metric = stored_study(args.experiment)
            if study is not None and metric == args.metric:
                rows = study_importances(study, args.evaluator)
                where = "the stored Optuna study"
            else:
                table, space = load(args.experiment), read_space(args.experiment)
                check_columns(table, args.experiment, {args.metric: "--metric"})
                rows = importances(table, space, args.metric, args.evaluator)
                where = "a study rebuilt from the results"
            print(
                f"importance of each searched parameter for {args.metric} ({args.evaluator}, "
                f"{where})"
            )
            print(tables.render(rows, args.format))
        elif args.command == "agreement":
            table = load(args.experiment)
            if len(set(table.column("experiment").to_pylist())) > 1:
                raise ValueError(f"{args.experiment}: holds several experiments; give one")
            print(tables.render(agreement_rows(table.to_pylist()), args.format))
            if args.format == "markdown":
                print(AGREEMENT_NOTE)
        elif args.command == "rankme":
            table = load(args.source)
            metric = args.metric or sweep_metric(args.source, table) or DEFAULT_METRIC
            check_columns(table, args.source, {metric: "--metric", "rankme": "rankme reads"})
            rows = tables.rankme_report(table, metric)
            print(tables.render(rows, args.format))
        elif args.command == "rungs":
            table = load(args.source)
            metric = args.metric or sweep_metric(args.source, table) or DEFAULT_METRIC
            check_columns(table, args.source, {metric: "--metric"})
            ended, rows = tables.rung_report(table, metric)
            print(rung_title(metric, ended))
            if rows:
                print(tables.render(rows, args.format))
        else:
            table, space = load(args.experiment), read_space(args.experiment)
            args.metric = args.metric or sweep_metric(args.experiment, table) or DEFAULT_METRIC
            check_columns(table, args.experiment, {args.metric: "--metric"})
            out = Path(args.out)
            written = [
                plots.metric_vs_params(table, space["params"], args.metric, out),
                plots.learning_curves(table, args.metric, out),
                plots.parallel_coordinates(table, space["params"], args.metric, out),
            ]
            print("\n".join(str(p) for p in written))
    except (CollectError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
