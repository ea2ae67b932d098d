-- The view every query here reads: all output lines under the output root held in the DuckDB
-- variable `outputs` (SET VARIABLE outputs = 's3://bucket/gleaner/out';), plain and gzipped,
-- with the partition columns `source` and `date` of the hive layout (--output-layout hive).
-- The columns are those of schema/output-line.schema.json; `result` stays JSON, since its shape
-- depends on the processor.
CREATE OR REPLACE VIEW outputs AS
SELECT *
FROM read_json(
    getvariable('outputs') || '/**/*.ndjson*',
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
        error: 'VARCHAR'
    }
);
