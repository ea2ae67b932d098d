-- stats outputs of labelled sources (gleaner run --label namespace=… --label app=…
-- --partition-label namespace --output-layout hive, as the Helm chart's labels do): files, bytes
-- and lines per namespace (a partition column, read from the path: pruned by a WHERE on it) and
-- app (a label, read from each line's `labels`).
SELECT
    namespace,
    labels['app'] AS app,
    count(*) AS files,
    sum(size) AS bytes,
    sum(CAST(result ->> 'lines' AS BIGINT)) AS lines
FROM outputs
WHERE processor = 'stats'
GROUP BY namespace, app
ORDER BY namespace, app;
