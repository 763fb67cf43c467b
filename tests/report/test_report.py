"""The HTML report: self-contained, every figure captioned, sections driven by the table and extras;
the table saved to disk and read back unchanged; the ``report`` subcommand."""

from __future__ import annotations

import argparse
import base64
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from shrinkpert.errors import InputError, MissingKeyError, OutputExistsError
from shrinkpert.report import EXTRA_SECTIONS, load_table, render_html, save_table, write_html
from shrinkpert.report import cli as report_cli

IMG = re.compile(r'<img src="([^"]*)" alt="([^"]*)">')


def _images(page):
    return IMG.findall(page)


def test_page_is_self_contained_and_every_figure_is_a_valid_captioned_svg(pages):
    page = pages[1]
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, flags=re.I)
    assert "url(" not in page  # no fonts or images pulled in by the style sheet
    images = _images(page)
    assert len(images) >= 5  # summary grid + strips and distributions for 3 families
    for uri, _ in images:
        assert uri.startswith("data:image/svg+xml;base64,")
        root = ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))  # well-formed XML, an <svg> root
        assert root.tag.endswith("svg")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, flags=re.S)
    assert len(captions) == len(images)
    for caption in captions:  # one sentence saying how to read the figure
        assert caption.endswith(".") and caption.count(". ") == 0, caption


def test_both_models_and_every_metric_row_appear(tables, pages):
    _, combined = tables
    single_page, page = pages
    for name in ("replicate", "half shuffled"):
        assert page.count(f"<h3>{name}</h3>") == 1  # worst/best block per model
    for metric in ("mse", "pearson_delta", "discrimination_score_l1", "overlap_at_N"):
        assert metric in page
    # the numeric table holds each model's calibrated score and interval as printed by summary()
    row = combined.summary().loc[("pearson_delta", "uniform", "control", "half shuffled")]
    assert f"{row['calibrated']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in page
    # a table without a model column is one model named "model"
    assert "<h3>model</h3>" in single_page and "half shuffled" not in single_page


def test_worst_perturbations_are_those_losing_to_the_negative_control(tables, pages):
    single = tables[0]  # the "replicate" model alone
    page = pages[1]
    block = page.split("<h3>replicate</h3>", 1)[1]
    first_table = block.split("</table>", 1)[0]
    cells = re.findall(r"<tr>(.*?)</tr>", first_table)
    worst = [r for r in (re.findall(r"<td[^>]*>(.*?)</td>", c) for c in cells) if r]
    # recompute the share of metric rows beating the negative control from to_frame() directly
    values, summary = single.to_frame(), single.summary().reset_index()
    shares = {}
    for s in summary.itertuples():
        if not s.negative:
            continue
        rows = values[(values.metric == s.metric) & (values.reference == s.reference)
                      & (values.weighting == s.weighting)]
        v, n = rows["value"].to_numpy(), rows[f"baseline_{s.negative}"].to_numpy()
        better = (v > n) if s.greater_is_better else (v < n)
        for p, b, ok in zip(rows.perturbation, better, np.isfinite(v) & np.isfinite(n)):
            if ok:
                shares.setdefault(p, []).append(b)
    expected = sorted(np.mean(b) for b in shares.values())[:5]
    assert [float(r[2]) for r in worst] == pytest.approx(expected, abs=5e-4)


def test_extra_sections_appear_only_when_given(small, pages):
    single = small
    plain = pages[0]
    for key, (title, _) in EXTRA_SECTIONS.items():
        assert f'id="extra-{key}"' not in plain
    strata = pd.DataFrame({"stratum": ["easy", "medium", "hard"], "calibrated": [0.9, 0.5, 0.1]})
    custom = pd.Series([1.0, 2.0], index=["a", "b"], name="my_value")
    page = render_html(single, extras={"difficulty": strata, "my notes": custom})
    assert page.index('id="extra-difficulty"') < page.index('id="extra-my notes"')
    assert "Difficulty strata" in page and "my_value" in page and "hard" in page
    assert len(_images(page)) == 3 + 2  # grid, strips, distributions; one dot plot per numeric extra
    with pytest.raises(InputError, match=r"extras\['difficulty'\] must be a pandas DataFrame"):
        render_html(single, extras={"difficulty": [1, 2]})
    with pytest.raises(InputError, match="extras must be a mapping"):
        render_html(single, extras=[strata])


def test_write_html_is_atomic_and_refuses_to_overwrite(small, tmp_path):
    single = small
    path = write_html(single, tmp_path / "r.html", title="My run")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>My run</title>" in text
    with pytest.raises(OutputExistsError, match="already exists"):
        write_html(single, path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left


def test_save_and_load_round_trip_exactly(tables, tmp_path):
    _, combined = tables
    folder = save_table(combined, tmp_path / "table")
    manifest = ["manifest.json"] if combined.params.get("manifest") else []  # the run manifest, when it has one
    assert sorted(p.name for p in folder.iterdir()) == sorted(["metrics.csv", "params.json", "summary.csv",
                                                               "table.json", *manifest])
    back = load_table(folder)
    pd.testing.assert_frame_equal(back.to_frame(), combined.to_frame(), check_exact=True)
    pd.testing.assert_frame_equal(back.summary(), combined.summary(), check_exact=True)
    assert back.perturbations.tolist() == combined.perturbations.tolist()
    assert back.genes.tolist() == combined.genes.tolist()
    assert back.params["baselines"] == dict(combined.params["baselines"])
    assert back.params["references"] == list(combined.params["references"])
    with pytest.raises(OutputExistsError, match="already exists"):
        save_table(combined, folder)


def test_load_reads_an_evaluate_output_folder_without_metadata(tables, tmp_path):
    single, _ = tables
    # what `shrinkpert evaluate --out` writes: pandas' default CSVs (NaN as empty cells)
    single.to_frame().to_csv(tmp_path / "metrics.csv", index=False)
    single.summary().to_csv(tmp_path / "summary.csv")
    back = load_table(tmp_path)
    pd.testing.assert_frame_equal(back.to_frame(), single.to_frame(), check_exact=True)
    expected = single.summary()
    pd.testing.assert_frame_equal(back.summary(), expected, check_exact=True, check_dtype=False)
    assert back.summary()["greater_is_better"].dtype == bool
    assert len(back.genes) == 0 and back.params == {}
    (tmp_path / "summary.csv").unlink()
    with pytest.raises(MissingKeyError, match="has no summary.csv"):
        load_table(tmp_path)


def test_report_subcommand_writes_report_html(small, tmp_path, capsys):
    single = small
    save_table(single, tmp_path / "table")
    (tmp_path / "strata.csv").write_text("stratum,score\neasy,0.8\nhard,0.2\n")
    parser = argparse.ArgumentParser(prog="shrinkpert")
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(tmp_path / "table"), "--out", str(tmp_path / "out"),
                              "--extra", f"difficulty={tmp_path / 'strata.csv'}"])
    path = args.handler(args)
    assert path == tmp_path / "out" / "report.html" and "Difficulty strata" in path.read_text(encoding="utf-8")
    assert str(path) in capsys.readouterr().out
    bad = parser.parse_args(["report", str(tmp_path / "table"), "--out", str(tmp_path / "o2"), "--extra", "x"])
    with pytest.raises(InputError, match="write NAME=FILE.csv"):
        bad.handler(bad)


def test_a_table_without_baselines_renders_without_calibration_figures():
    import shrinkpert as sp

    from .conftest import _split

    cells = sp.datasets.simulate(n_cells=500, n_genes=60, n_perturbations=6, seed=11)
    truth, pred = _split(cells, 2)
    table = sp.evaluate(pred, truth, metrics=["mse"], baselines=[], n_boot=10)
    page = render_html(table)
    assert len(_images(page)) == 1  # the summary grid only
    assert "This table has no calibration" in page and "No per-perturbation comparison is possible" in page
