"""shrinkpert.biology: do perturbation maps — measured or predicted — recover known biology?

* :func:`load_relationships` / :func:`read_relationships`: known gene–gene pairs (bundled
  Reactome, hu.MAP, STRING; user pair files, GMT or set files turned into pairs).
* :func:`perturbation_map`: profiles aligned on controls (centre or PCA-whiten), related by
  :func:`cosine_similarity`.
* :func:`relationship_recall`: EFAAR-style recall of known pairs in the tails of the map, with a
  permutation null. :func:`map_agreement`: retrieval of the true map's neighbours in a predicted
  map. :func:`pathway_activity`: gene-set activity per perturbation.
* :data:`METRIC_SPECS`: ``relationship_recall``, ``map_agreement`` and ``pathway_activity`` for the
  metric registry (array functions :func:`relationship_recall_score`, :func:`map_agreement_score`,
  :func:`pathway_activity_score`).
"""

from .agreement import MapAgreement, map_agreement
from .maps import PerturbationMap, cosine_similarity, perturbation_map, profile_matrix
from .pathways import PathwayActivity, pathway_activity
from .recall import RelationshipRecall, relationship_recall
from .relationships import BUNDLED, load_relationships, pairs_from_sets, read_relationships
from .scores import METRIC_SPECS, map_agreement_score, pathway_activity_score, relationship_recall_score

__all__ = [
    "BUNDLED",
    "load_relationships",
    "read_relationships",
    "pairs_from_sets",
    "PerturbationMap",
    "perturbation_map",
    "profile_matrix",
    "cosine_similarity",
    "RelationshipRecall",
    "relationship_recall",
    "MapAgreement",
    "map_agreement",
    "PathwayActivity",
    "pathway_activity",
    "relationship_recall_score",
    "map_agreement_score",
    "pathway_activity_score",
    "METRIC_SPECS",
]
