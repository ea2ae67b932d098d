-- count-by outputs: the per-file top keys merged across every source and day, ten most
-- frequent first. Exact when every file's result is exact and lists all its keys (fewer
-- distinct keys than --top); otherwise a lower bound for each key (see `other`).
WITH keys AS (
    SELECT unnest(from_json(result -> 'top', '[{"key": "VARCHAR", "count": "UBIGINT"}]')) AS k
    FROM outputs
    WHERE processor = 'count-by' AND error IS NULL
)
SELECT k.key AS key, sum(k.count) AS lines
FROM keys
GROUP BY k.key
ORDER BY lines DESC, key
LIMIT 10;
