"""Kafka -> Delta Lake landing job of COELHO RealTime.

Mounted into the spark-streaming Deployment from a ConfigMap and started with
spark-submit (client mode) against the chart's Spark master. One streaming
query per topic writes the raw events, with their Kafka coordinates, to
<DELTA_ROOT>/<topic>; checkpoints go to <CHECKPOINT_ROOT>/<topic>. The driver
waits on all queries and exits when any of them fails, so Kubernetes restarts
the pod instead of leaving a half-working job behind.

Environment (set by the chart): STREAMING_TOPICS (comma-separated),
KAFKA_BOOTSTRAP_SERVERS, DELTA_ROOT, CHECKPOINT_ROOT, AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (from the MinIO Secret).
"""

import os

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def build_session() -> SparkSession:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    # Credentials go into the Hadoop configuration here rather than onto the
    # spark-submit command line, where any process listing would show them.
    # Spark's UI redacts these keys (spark.redaction.regex).
    return (
        SparkSession.builder.appName("coelho-kafka-to-delta")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.hadoop.fs.s3a.endpoint", endpoint)
        .config("spark.hadoop.fs.s3a.access.key", os.environ["AWS_ACCESS_KEY_ID"])
        .config("spark.hadoop.fs.s3a.secret.key", os.environ["AWS_SECRET_ACCESS_KEY"])
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", str(endpoint.startswith("https://")).lower())
        .config("spark.hadoop.fs.s3a.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")
        .getOrCreate()
    )


def start_query(spark: SparkSession, topic: str, bootstrap: str, delta_root: str, checkpoint_root: str):
    events = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        # Topics are auto-created with a 7-day retention; a restart after a long
        # outage resumes from what is left instead of failing forever.
        .option("failOnDataLoss", "false")
        .load()
        .select(
            F.col("key").cast("string").alias("key"),
            F.col("value").cast("string").alias("value"),
            F.col("topic"),
            F.col("partition"),
            F.col("offset"),
            F.col("timestamp").alias("kafka_timestamp"),
        )
        .withColumn("ingested_at", F.current_timestamp())
    )
    return (
        events.writeStream.format("delta")
        .queryName(topic)
        .outputMode("append")
        .option("checkpointLocation", f"{checkpoint_root}/{topic}")
        .trigger(processingTime="10 seconds")
        .start(f"{delta_root}/{topic}")
    )


def main() -> None:
    topics = [t.strip() for t in os.environ["STREAMING_TOPICS"].split(",") if t.strip()]
    if not topics:
        raise SystemExit("STREAMING_TOPICS names no topic")
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    delta_root = os.environ["DELTA_ROOT"].rstrip("/")
    checkpoint_root = os.environ["CHECKPOINT_ROOT"].rstrip("/")

    spark = build_session()
    for topic in topics:
        start_query(spark, topic, bootstrap, delta_root, checkpoint_root)
    spark.streams.awaitAnyTermination()


if __name__ == "__main__":
    main()
