"""Stratum rules on hand-built feature tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.strata import STRATA, StrataRules, assign_strata


def test_rules_in_order():
    features = pd.DataFrame({
        "signal_p": [0.5, 0.01, 0.01, 0.01, 0.01, 0.049, 0.05],
        "replicability_shrunk": [0.9, 0.1, 0.9, 0.9, 0.3, np.nan, 0.9],
        "nearest_similarity": [0.9, 0.9, 0.1, 0.6, 0.6, np.nan, 0.9],
    }, index=list("abcdefg"))
    strata = assign_strata(features)
    assert strata.tolist() == ["no signal", "hard", "hard", "easy", "medium", "medium", "no signal"]
    assert list(strata.cat.categories) == list(STRATA)


def test_missing_signal_is_no_signal_and_thresholds_apply():
    features = pd.DataFrame({"signal_p": [np.nan, 0.001], "replicability_shrunk": [0.9, 0.45],
                             "nearest_similarity": [0.9, 0.45]})
    assert assign_strata(features).tolist() == ["no signal", "medium"]
    loose = StrataRules(easy_replicability=0.4, easy_similarity=0.4)
    assert assign_strata(features, loose).tolist() == ["no signal", "easy"]


def test_rule_errors():
    with pytest.raises(MissingKeyError, match="signal_p"):
        assign_strata(pd.DataFrame({"replicability_shrunk": [1.0], "nearest_similarity": [1.0]}))
    with pytest.raises(InputError, match="hard_replicability"):
        StrataRules(hard_replicability=0.8, easy_replicability=0.5)
    with pytest.raises(InputError, match="signal_alpha"):
        StrataRules(signal_alpha=0.0)
