"""shrinkpert.stats"""

from .group import GroupStatistics, group_statistics
from .shards import load_statistics, merge_statistics, save_statistics

__all__ = ["GroupStatistics", "group_statistics", "merge_statistics", "save_statistics", "load_statistics"]
