"""The view every Spark SQL query here reads: `outputs`, the committed output lines under an output
root (plain and gzipped), with the partition columns `source` and `date` of the hive layout
(--output-layout hive), and one more per --partition-label. The columns are those of
schema/output-line.schema.json; `result` is kept as JSON text, since its shape depends on the
processor; `labels` is a map (labels['namespace']). Every source under one root must have the same
partition folders: Spark reads one set of partition columns.

Only committed objects are read: those named by a commit record of the manifest,
`<root>/.committed/<source-id>/<generation>.json` (schema/commit-record.schema.json), as Spark's
own file sink has readers go by its `_spark_metadata` log. An object of a batch not yet committed
has no record, so it is not read.

One line per result: a file replayed on purpose (`gleaner state replay`) has a later line, marked
`replay`, that supersedes the one before it for the same source and path; the view keeps the
later one only. Files collected again as new (rewritten, replaced) keep all their lines.

    spark-submit examples/queries/spark/outputs.py OUTPUT_ROOT QUERY.sql
"""
import sys

from pyspark.sql import SparkSession

SCHEMA = (
    "schema INT, source_id STRING, generation BIGINT, path STRING, path_bytes ARRAY<INT>, "
    "size BIGINT, encoding STRING, mtime STRING, start BIGINT, processor STRING, "
    "result STRING, error STRING, labels MAP<STRING, STRING>, replay BOOLEAN"
)


def without_superseded(frame):
    """The lines no replay superseded: a line is dropped when the next line of the same source
    and path (by generation) is a replay of it."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    following = Window.partitionBy("source_id", "path").orderBy("generation")
    superseded = F.coalesce(F.lead("replay").over(following), F.lit(False))
    return frame.withColumn("_superseded", superseded).where("NOT _superseded").drop("_superseded")


def committed_objects(spark, root):
    """The output objects the commit records under `root` name, as paths."""
    records = spark.read.schema("key STRING").json(f"{root}/.committed/*/*.json")
    return sorted(f"{root}/{row.key}" for row in records.collect())


def register(spark, root):
    """Registers the `outputs` view over the committed objects under the output root `root`."""
    objects = committed_objects(spark, root)
    if objects:
        # basePath: the `source=`/`date=` folders below the root become partition columns.
        frame = without_superseded(spark.read.schema(SCHEMA).option("basePath", root).json(objects))
    else:
        frame = spark.createDataFrame([], SCHEMA)
    frame.createOrReplaceTempView("outputs")


def run(spark, root, query_file):
    register(spark, root)
    with open(query_file) as f:
        return spark.sql(f.read()).collect()


if __name__ == "__main__":
    spark = SparkSession.builder.master("local[2]").appName("gleaner-queries").getOrCreate()
    for row in run(spark, sys.argv[1], sys.argv[2]):
        print(row.asDict())
