-- stats outputs: files, bytes and lines per source and day (the day the batch was planned).
SELECT
    source_id,
    date,
    count(*) AS files,
    count(error) AS failed,
    sum(size) AS bytes,
    sum(CAST(result ->> 'lines' AS BIGINT)) AS lines,
    sum(CAST(result ->> 'words' AS BIGINT)) AS words
FROM outputs
WHERE processor = 'stats'
GROUP BY source_id, date
ORDER BY source_id, date;
