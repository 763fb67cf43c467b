"""shrinkpert.reference"""

from ._genes import gencode_table, gene_key

__all__ = ["gencode_table", "gene_key"]
