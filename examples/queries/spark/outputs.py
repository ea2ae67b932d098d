"""The view every Spark SQL query here reads: `outputs`, all output lines under an output root
(plain and gzipped), with the partition columns `source` and `date` of the hive layout
(--output-layout hive). The columns are those of schema/output-line.schema.json; `result` is kept
as JSON text, since its shape depends on the processor.

    spark-submit examples/queries/spark/outputs.py OUTPUT_ROOT QUERY.sql
"""
import sys

from pyspark.sql import SparkSession

SCHEMA = (
    "schema INT, source_id STRING, generation BIGINT, path STRING, path_bytes ARRAY<INT>, "
    "size BIGINT, encoding STRING, mtime STRING, start BIGINT, processor STRING, "
    "result STRING, error STRING"
)


def register(spark, root):
    """Registers the `outputs` view over the output root `root`."""
    frame = (
        spark.read.schema(SCHEMA)
        .option("pathGlobFilter", "*.ndjson*")
        .option("recursiveFileLookup", "false")
        .json(root)
    )
    frame.createOrReplaceTempView("outputs")


def run(spark, root, query_file):
    register(spark, root)
    with open(query_file) as f:
        return spark.sql(f.read()).collect()


if __name__ == "__main__":
    spark = SparkSession.builder.master("local[2]").appName("gleaner-queries").getOrCreate()
    for row in run(spark, sys.argv[1], sys.argv[2]):
        print(row.asDict())
