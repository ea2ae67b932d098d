"""Runs a DuckDB query file of this folder over an output root: defines the `outputs` view
(outputs.sql, with the root as the variable `outputs`), then runs the query.

    python3 examples/queries/duckdb/outputs.py OUTPUT_ROOT QUERY.sql

(In the DuckDB CLI: `SET VARIABLE outputs = 'OUTPUT_ROOT';`, `.read outputs.sql`, then the query.)
"""
import pathlib
import sys

import duckdb

HERE = pathlib.Path(__file__).resolve().parent


def register(con, root):
    """Defines the `outputs` view over the output root `root` on the connection `con`."""
    con.execute("SET VARIABLE outputs = ?", [str(root)])
    con.execute((HERE / "outputs.sql").read_text())


def run(con, root, query_file):
    """The rows of the query in `query_file` over `root`, as dictionaries."""
    register(con, root)
    cursor = con.execute(pathlib.Path(query_file).read_text())
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


if __name__ == "__main__":
    for row in run(duckdb.connect(), sys.argv[1], sys.argv[2]):
        print(row)
