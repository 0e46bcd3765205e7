"""docs/benchmarks.md keeps the method, the latest results and a list of every run's summary.
A run replaces what lies between a pair of marker comments, `<!-- NAME:start -->` and
`<!-- NAME:end -->`, and adds its line to the list (section `runs`, newest first); it never
appends to the file. The summaries themselves are in bench/results/<run>/, in git."""

from pathlib import Path

RUNS = "runs"


class MissingMarkers(ValueError):
    """The file lacks a section's pair of markers (or has more than one, or out of order)."""


def markers(name):
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _split(text, name):
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise MissingMarkers(
            f"expected one {start} followed by one {end}: put the pair back where the"
            f" section belongs (docs/benchmarks.md) and rerun, the run's summary is in its"
            f" results directory"
        )
    head, rest = text.split(start)
    body, tail = rest.split(end)
    return head, body, tail


def section(text, name):
    """What lies between the section's markers, without the blank lines around it."""
    return _split(text, name)[1].strip("\n")


def replace_section(text, name, body):
    """`text` with the section `name` holding `body` instead of what it held; everything
    outside the markers stays as it was. MissingMarkers if the markers are not there."""
    head, _, tail = _split(text, name)
    start, end = markers(name)
    body = body.strip("\n")
    return f"{head}{start}\n\n{body}\n\n{end}{tail}"


def add_run(text, entry):
    """`text` with `entry` (one Markdown list line) first in the list of runs; a line
    already in the list is moved up, not repeated."""
    older = [line for line in section(text, RUNS).splitlines() if line.strip() and line != entry]
    return replace_section(text, RUNS, "\n".join([entry, *older]))


def check(path, names):
    """Raise MissingMarkers now, before an hour's run, if `path` lacks a section to write."""
    text = Path(path).read_text()
    for name in [*names, RUNS]:
        section(text, name)


def update(path, sections, entry):
    """Replace each of `sections` ({name: body}) in the file and list `entry` first."""
    text = Path(path).read_text()
    for name, body in sections.items():
        text = replace_section(text, name, body)
    Path(path).write_text(add_run(text, entry))


def link(results_dir, filename):
    """A link from docs/ to a file of a run's results directory (relative to the repo)."""
    return f"[`{results_dir}/{filename}`](../{results_dir}/{filename})"
