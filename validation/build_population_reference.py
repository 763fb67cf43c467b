"""Build the shipped population references and check them against real control cells.

1. Builds ``thp1_yao`` and ``k562_gasperini`` (see :mod:`shrinkpert.reference.bundled`) from
   perturbplan's baseline tables and the gene-length tables in ``shared/data`` and writes them to
   ``shrinkpert/reference/_bundled/`` (``--write``); prints their SHA-256 for ``BUNDLED``.
2. For each of the eight perturbplan cell types: Spearman correlation, over the genes both share,
   between the reference's relative expression and that of the bundled Papalexi 2021 THP-1
   non-targeting cells (299 genes). A reference describes the right cell type when it correlates
   best with THP-1 controls; the gene-length coverage of the matched genes is reported too.

Writes ``validation/output/population_reference.csv`` and ``docs/figures/population_reference.png``.
Run: ``python validation/build_population_reference.py --data /path/to/shared/data [--write]``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import shrinkpert as sp
from shrinkpert._io import sha256_file
from shrinkpert.errors import ShrinkpertWarning
from shrinkpert.reference.bundled import BUNDLED, _bundled_path, build_perturbplan_reference
from _output import pyplot, save_figure, write_table  # validation/_output.py

STATS = "baseline_expression_perturbplan/baseline_expression_stats.csv.gz"
LIBRARY = "baseline_expression_perturbplan/library_parameters.csv"
ENS_LENGTHS = "gene_annotation/hg19_ensGene_gene_lengths.csv.gz"
SYMBOL_LENGTHS = "gene_annotation/hg19_refseq_symbol_gene_lengths.csv.gz"


def build(data: Path, dataset: str, name: str | None = None):
    return build_perturbplan_reference(data / STATS, data / LIBRARY, dataset=dataset, lengths=data / ENS_LENGTHS,
                                       symbol_lengths=data / SYMBOL_LENGTHS, name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--write", action="store_true", help="(re)write the bundled files")
    args = parser.parse_args()

    if args.write:
        for entry in BUNDLED.values():
            ref = build(args.data, entry.dataset, name=entry.name)
            path = ref.save(_bundled_path(entry), force=True)
            print(f"{entry.name}: {path.name} {path.stat().st_size} bytes sha256 {sha256_file(path)}")

    adata = sp.datasets.papalexi2021()
    controls = adata[adata.obs["perturbation"] == "non-targeting"]
    counts = np.asarray(controls.X.sum(axis=0)).ravel()
    observed = counts / counts.sum()
    rows = []
    library = pd.read_csv(args.data / LIBRARY)
    for dataset in library["dataset"]:
        ref = build(args.data, dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShrinkpertWarning)  # unmatched genes are counted below
            aligned = ref.align(adata.var_names)
        known = np.isfinite(aligned.relative_expression)
        rho = stats.spearmanr(aligned.relative_expression[known], observed[known])[0]
        rows.append({"dataset": dataset, "genes_matched": int(known.sum()), "spearman_vs_papalexi_thp1": rho,
                     "genes_with_length": int(np.isfinite(aligned.gene_length[known]).sum()),
                     "reference_genes": len(ref.genes),
                     "reference_genes_with_length": int(np.isfinite(ref.gene_length).sum())})
    table = pd.DataFrame(rows).sort_values("spearman_vs_papalexi_thp1", ascending=False)
    print(write_table(table, "population_reference.csv"))
    print(table.to_string(index=False))
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        colours = ["tab:red" if d == "THP1_Yao" else "tab:grey" for d in table["dataset"]]
        ax.barh(table["dataset"], table["spearman_vs_papalexi_thp1"], color=colours)
        ax.invert_yaxis()
        ax.set_xlabel("Spearman ρ of relative expression vs Papalexi THP-1 controls")
        ax.set_xlim(0, 1)
        fig.tight_layout()
        print(save_figure(fig, "population_reference.png"))


if __name__ == "__main__":
    main()
