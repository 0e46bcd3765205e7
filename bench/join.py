"""Join two runs of one host each into one headline: `python -m bench.join TUNED_DIR
NAIVE_DIR`, each a results directory of `python -m bench.run --hosts tuned` (or naive) with
its summary.json. The tuned run's directory gets the summary of both hosts, with the
naive/tuned ratio and every target, and docs/benchmarks.md's headline is replaced, as a run
of both hosts replaces it. For when the two halves did not run back to back: the summary
says when, at which commit and for how long the naive half ran."""

import argparse
import json
from pathlib import Path

from . import analysis, docs, report
from .run import DOCS, update_docs, write_summary


def join(tuned_dir, naive_dir, docs_path=DOCS):
    tuned = json.loads((tuned_dir / "summary.json").read_text())
    naive = json.loads((naive_dir / "summary.json").read_text())
    figures = {"tuned": tuned["figures"]["tuned"], "naive": naive["figures"]["naive"]}
    meta, other = dict(tuned["meta"]), naive["meta"]
    meta["fake_note"] += (
        f" The naive half ran on its own: {other['date']}, commit {other['commit']},"
        f" {other['minutes']:g} min, {report._people(other['people'])}"
        f" ({docs.link(other['results_dir'], 'summary.md')})."
    )
    verdict_rows, ratio = analysis.verdicts(figures["tuned"], figures["naive"])
    ceiling = tuned["ceiling"]
    summary = write_summary(tuned_dir, meta, figures, verdict_rows, ratio, ceiling)
    update_docs(docs_path, meta, figures, verdict_rows, ratio, ceiling)
    return summary


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.join", description=__doc__)
    parser.add_argument("tuned_dir", type=Path)
    parser.add_argument("naive_dir", type=Path)
    args = parser.parse_args()
    print(join(args.tuned_dir, args.naive_dir))


if __name__ == "__main__":
    main()
