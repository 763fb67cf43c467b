"""Bundled real data and a simulator with known truth.

* :func:`papalexi2021` — real THP-1 ECCITE-seq CRISPR screen (Papalexi et al. 2021), shipped with
  the package (MIT, from the sceptredata R package; see ``_bundled/PROVENANCE.md``).
* :func:`simulate` — seeded negative-binomial Perturb-seq with known effects, knockdown,
  escaping cells and a systematic shift.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .._io import sha256_file
from ..errors import InputError
from .simulate import simulate

__all__ = ["papalexi2021", "papalexi2021_path", "simulate"]

_PAPALEXI = "papalexi2021_thp1_lowmoi.h5ad"
_PAPALEXI_SHA256 = "d592e6037deb9f0e17c792bea3d141f182ed16cda8175b840fbd8bd0c5f866ac"


def papalexi2021_path() -> Path:
    """Path of the bundled Papalexi 2021 ``.h5ad`` (read-only; never write to it)."""
    return Path(str(resources.files("shrinkpert.data").joinpath("_bundled", _PAPALEXI)))


def papalexi2021(*, backed: bool = False, verify: bool = False):
    """Papalexi et al. 2021 THP-1 ECCITE-seq screen, low-MOI subset (real data).

    20,729 cells × 299 genes of raw UMI counts; 26 targets with 3–4 guides each and 9
    non-targeting guides; three biological replicates.

    ``obs`` columns: ``perturbation`` (target gene, ``"non-targeting"`` or ``"unassigned"``),
    ``guide_id``, ``bio_rep``, ``is_control``, guide UMI summaries. ``var["is_perturbation_target"]``
    marks the 9 targets that are measured genes (STAT1, JAK2, CMTM6, STAT2, UBE2L6, STAT3,
    TNFRSF14, IFNGR2, NFKBIA). ``obsm["grna_counts"]`` holds the raw guide UMIs.

    Parameters
    ----------
    backed
        Open the file in backed read-only mode instead of loading it.
    verify
        Check the file's SHA-256 against the value recorded at packaging time.

    Returns
    -------
    anndata.AnnData
        A fresh object each call; modifying it never touches the bundled file.

    Notes
    -----
    Cells whose top guide had fewer than 5 UMIs or under 80% of the guide UMIs are labelled
    ``"unassigned"``: exclude them (``adata[adata.obs.perturbation != "unassigned"]``) or pass
    ``perturbations=`` explicitly. Library sizes cover only the 299 stored genes.

    References
    ----------
    Papalexi E. et al. Characterizing the molecular regulation of inhibitory immune checkpoints
    with multimodal single-cell screens. Nat Genet 53, 322–331 (2021).
    """
    import anndata as ad

    path = papalexi2021_path()
    if verify and sha256_file(path) != _PAPALEXI_SHA256:
        raise InputError(f"The bundled file {path} is corrupted (checksum mismatch); reinstall shrinkpert.")
    return ad.read_h5ad(path, backed="r" if backed else None)
