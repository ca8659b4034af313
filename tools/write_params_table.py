"""Rewrite the parameter-count table shipped in the package (src/cnnzoo/analysis/params_table.json).

    .venv/bin/python tools/write_params_table.py

Run it after changing how any model is built (cnnzoo/models/, layers.py, registry.py): `cnnzoo list` reads the
table only while those files match the ones it was computed from, and the suite fails while it is stale.
"""

from cnnzoo.analysis.counting import TABLE_FILE, write_table

if __name__ == "__main__":
    counts = write_table()
    print(f"wrote {len(counts)} parameter counts to {TABLE_FILE}")
