"""shrinkpert.stats"""

from .group import CellPass, GroupStatistics, cell_pass, group_statistics
from .shards import load_statistics, merge_statistics, save_statistics

__all__ = ["GroupStatistics", "group_statistics", "CellPass", "cell_pass", "merge_statistics", "save_statistics", "load_statistics"]
