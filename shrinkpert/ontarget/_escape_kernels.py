"""Numba kernel of the target-gene passes: row totals, raw group sums and entry extraction.

One serial loop over the stored values of a CSR block (results do not depend on threads or
block size: integer counts are summed exactly in float64). The NumPy twin is
``tests/target/test_kernels.py::scan_block_reference``.
"""

from __future__ import annotations

import numpy as np

from .._numba import kernel


@kernel
def scan_block(data, indices, indptr, row_offset, col_offset, row_codes, group_codes, use_map, slot_map,
               keys, n_genes, totals, sums, squares, out_rows, out_cols, out_vals, flags):
    """Scan one CSR block (rows ``row_offset + i``, columns ``col_offset + indices``).

    * ``totals[row] += value`` for every stored value;
    * when ``sums.shape[0] > 0``: ``sums[g, col] += value`` and ``squares[g, col] += value**2``
      with ``g = group_codes[row]`` (skipped when ``g < 0``);
    * a value whose ``(row_codes[row], col)`` pair is wanted — ``slot_map[code, col]`` when
      ``use_map``, else ``code * n_genes + col`` found in the sorted ``keys`` — is written to
      ``out_rows/out_cols/out_vals``.

    ``flags``: [0] non-finite values, [1] negative or non-integer values. Returns the number of
    extracted entries.
    """
    n_out = 0
    n_rows = indptr.shape[0] - 1
    accumulate = sums.shape[0] > 0
    n_keys = keys.shape[0]
    for i in range(n_rows):
        row = row_offset + i
        code = row_codes[row]
        g = group_codes[row] if accumulate else -1
        for k in range(indptr[i], indptr[i + 1]):
            v = np.float64(data[k])
            if not np.isfinite(v):
                flags[0] += 1
                continue
            if v < 0.0 or v != np.floor(v):
                flags[1] += 1
            col = col_offset + indices[k]
            totals[row] += v
            if g >= 0:
                sums[g, col] += v
                squares[g, col] += v * v
            if code < 0:
                continue
            wanted = False
            if use_map:
                wanted = slot_map[code, col]
            elif n_keys > 0:
                key = np.int64(code) * n_genes + col
                lo, hi = 0, n_keys
                while lo < hi:
                    mid = (lo + hi) // 2
                    if keys[mid] < key:
                        lo = mid + 1
                    else:
                        hi = mid
                wanted = lo < n_keys and keys[lo] == key
            if wanted:
                out_rows[n_out] = row
                out_cols[n_out] = col
                out_vals[n_out] = v
                n_out += 1
    return n_out
