-- The view every query here reads: the committed output lines under the output root held in the
-- DuckDB variable `outputs` (SET VARIABLE outputs = 's3://bucket/gleaner/out';), plain and
-- gzipped, with the partition columns `source` and `date` of the hive layout
-- (--output-layout hive), and one more per --partition-label. The columns are those of
-- schema/output-line.schema.json; `result` stays JSON, since its shape depends on the processor;
-- `labels` is a map (labels['namespace']). Every source under one root must have the same
-- partition folders: DuckDB reads one set of partition columns.
--
-- Only committed objects are read: those named by a commit record of the manifest,
-- `<root>/.committed/<source-id>/<generation>.json` (schema/commit-record.schema.json). An object
-- of a batch not yet committed (or whose process died before its commit; its redo rewrites
-- it) has no record, so it is not read. The list is taken when this file runs: run it again to
-- see later commits.
--
-- One line per result: a file replayed on purpose (`gleaner state replay`) has a later line,
-- marked `replay`, that supersedes the one before it for the same source and path; the view
-- keeps the later one only (`superseded` below). Files collected again as new (rewritten,
-- replaced) keep all their lines: only a replay supersedes.
SET VARIABLE committed_objects = (
    SELECT list(getvariable('outputs') || '/' || key ORDER BY key)
    FROM read_json(
        getvariable('outputs') || '/.committed/*/*.json',
        format = 'newline_delimited',
        columns = {key: 'VARCHAR'}
    )
);

CREATE OR REPLACE VIEW outputs AS
SELECT * EXCLUDE (superseded)
FROM (
SELECT
    *,
    coalesce(lead(replay) OVER (PARTITION BY source_id, path ORDER BY generation), false)
        AS superseded
FROM read_json(
    getvariable('committed_objects'),
    format = 'newline_delimited',
    hive_partitioning = true,
    columns = {
        schema: 'INTEGER',
        source_id: 'VARCHAR',
        generation: 'UBIGINT',
        path: 'VARCHAR',
        path_bytes: 'UTINYINT[]',
        size: 'UBIGINT',
        encoding: 'VARCHAR',
        mtime: 'TIMESTAMPTZ',
        start: 'UBIGINT',
        processor: 'VARCHAR',
        result: 'JSON',
        error: 'VARCHAR',
        labels: 'MAP(VARCHAR, VARCHAR)',
        replay: 'BOOLEAN'
    }
)
)
WHERE NOT superseded;
