"""Tiny long-running PySpark job for the end-to-end tests.

Run with spark-submit in client mode against the test kube-apiserver (see
README.md). It creates a SparkSession, which makes the driver ask Kubernetes
for spark.executor.instances executor pods, prints a marker line, then sleeps
until it is killed (SIGTERM/SIGINT) or until E2E_SPARK_JOB_SECONDS (default:
forever) have passed. The executor pods never run (no kubelet), so the job
never submits any Spark task: it only keeps the driver alive so tests can look
at the executor pods the driver created.
"""

import os
import signal
import sys
import time

from pyspark.sql import SparkSession


def main() -> int:
    limit = float(os.environ.get("E2E_SPARK_JOB_SECONDS", "0") or 0)
    builder = SparkSession.builder
    # spark-submit --name wins unless E2E_SPARK_APP_NAME is set (the app name
    # becomes the executor pod name prefix and the spark-app-name label).
    if os.environ.get("E2E_SPARK_APP_NAME"):
        builder = builder.appName(os.environ["E2E_SPARK_APP_NAME"])
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    print(
        "E2E_SPARK_JOB_READY app_id=%s master=%s" % (sc.applicationId, sc.master),
        flush=True,
    )

    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    start = time.monotonic()
    while not stopping and (limit <= 0 or time.monotonic() - start < limit):
        time.sleep(1)

    print("E2E_SPARK_JOB_STOPPING", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
