-- grep outputs: the ten files with the most matching lines across every source and day.
SELECT
    source_id,
    path,
    CAST(get_json_object(result, '$.matches') AS BIGINT) AS matches
FROM outputs
WHERE processor = 'grep' AND error IS NULL
ORDER BY matches DESC, source_id, path
LIMIT 10
