"""README.md and docs/results.md say what the committed JSON says (issue 22).

Every generated part is rendered here in memory from the committed records and compared with
the committed text: the README's benchmark tables, its "Reproductions" highlights and the
figures its prose quotes (`benchmarks.tables.readme_blocks`), ``summary.json`` and
docs/results.md (`benchmarks.report`). Nothing is written. When results change, regenerate both
together and commit them with the JSON:

    python -m benchmarks.reproduce report && python -m benchmarks.tables --write-readme
"""

import difflib

import pytest

from benchmarks import colanet, report, tables
from benchmarks._common import ROOT
from benchmarks.runner import OUT

REGENERATE = ("regenerate with `python -m benchmarks.reproduce report && python -m "
              "benchmarks.tables --write-readme`")


@pytest.fixture(scope="module")
def summary():
    return report.summarize(OUT)


def _diff(committed: str, rendered: str, name: str) -> str:
    lines = difflib.unified_diff(committed.splitlines(), rendered.splitlines(),
                                 f"{name} (committed)", f"{name} (from the JSON)", lineterm="")
    return "\n".join(list(lines)[:60])


def test_readme_generated_blocks_equal_what_the_json_renders(summary):
    text = (ROOT / "README.md").read_text()
    blocks = tables.readme_blocks(summary)
    missing = [name for name in blocks
               if f"<!-- {name} -->\n" not in text or f"\n<!-- /{name} -->" not in text]
    assert not missing, f"README.md lacks the markers of {missing}"
    assert all(blocks.values()), [name for name, block in blocks.items() if not block]
    assert {"table:reproductions", "text:reproductions", "text:wva-adam", "text:importance",
            "text:overhead", "text:walltime", "text:replay_cost"} <= set(blocks)
    regenerated = tables.fill(text, blocks)
    if regenerated != text:
        pytest.fail(f"README.md is not what the committed JSON gives; {REGENERATE}\n"
                    + _diff(text, regenerated, "README.md"), pytrace=False)


def test_summary_json_equals_the_records(summary):
    committed = (OUT / "summary.json").read_text()
    rendered = report.summary_json(summary)
    if rendered != committed:
        pytest.fail(f"summary.json is not the summary of the committed records; {REGENERATE}\n"
                    + _diff(committed, rendered, "summary.json"), pytrace=False)


def test_docs_results_md_equals_what_the_records_render(summary, monkeypatch):
    monkeypatch.setattr(colanet, "_alpha_plot", lambda *args, **kwargs: None)   # no drawing
    committed = (ROOT / "docs" / "results.md").read_text()
    rendered = report.results_page(OUT, summary)
    if rendered != committed:
        pytest.fail(f"docs/results.md is not what the committed records give; {REGENERATE}\n"
                    + _diff(committed, rendered, "docs/results.md"), pytrace=False)


def test_every_figure_the_page_shows_is_committed(summary):
    names = report.figure_names(report._load(OUT))
    shown = [f for files in names.values() for f in files]
    assert shown and all((ROOT / "docs" / "results" / f).exists() for f in shown), shown


def test_fill_replaces_only_between_markers():
    text = "a\n<!-- table:x -->\nold\n<!-- /table:x -->\nb <!-- text:y -->\nkeep\n"
    assert tables.fill(text, {"table:x": "new", "text:y": "unused", "table:z": "-"}) == (
        "a\n<!-- table:x -->\nnew\n<!-- /table:x -->\nb <!-- text:y -->\nkeep\n")
