"""Patient deduplication on Apache Spark: a model trained on DuckDB (``DedupeResult.model``)
scores the patients on a Spark session, for sites whose patient index outgrows one machine.

The model is splink's JSON settings. Its parameters (lambda, the m and u probabilities, the
term-frequency adjustments) and its blocking rules are used as they are; its SQL is in the
dialect it was trained on, so each comparison level and blocking rule is replaced by the
Spark SQL that ``dedupe.settings()`` writes for it (matched on the text it writes in the
model's dialect). A model whose SQL ``settings()`` does not write was trained on other
comparisons and is refused: retrain it rather than guess.

One known difference between the engines: DuckDB's ``jaro_winkler_similarity`` halves the
transpositions with integer division, splink's Scala ``jaro_winkler`` (Apache Commons Text)
does not, so a name pair with an odd number of transpositions can score a little lower on
Spark (ethan/nathan: 0.739 on DuckDB, 0.697 on Spark) and fall to a lower Jaro-Winkler level.

Without a session of its own the caller gets a local one (``local[*]``, bound to 127.0.0.1,
no web UI, its scratch space in a temporary folder) for the run, stopped at the end.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chartkeeper.mpi.dedupe import DedupeResult, Thresholds, classify, pairs, settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

# ``patient_row``'s fields: names, dates and numbers as text, phonetic codes as lists of text.
TEXT_FIELDS = ("unique_id", "first_name", "surname", "dob", "sex", "postcode", "street",
               "phone", "ssn")
LIST_FIELDS = ("first_name_phonetic", "surname_phonetic")

# Spark's own messages: errors only, on stderr. The gateway's logger has its own level so
# that Spark does not announce a "default log level" for the PySpark shell.
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""


class ModelMismatch(ValueError):
    """The model has SQL that ``settings()`` does not write (other comparisons or blocking
    rules than the current ones, or a hand-edited model): it cannot be rewritten for Spark."""


class SparkUnavailable(RuntimeError):
    """PySpark, Java or splink's similarity functions are missing."""


def spark_model(model: dict[str, Any]) -> dict[str, Any]:
    """``model`` with its comparison levels and blocking rules in Spark SQL and every trained
    parameter as it was."""
    dialect = model.get("sql_dialect")
    if dialect == "spark":
        return copy.deepcopy(model)
    if not isinstance(dialect, str):
        raise ModelMismatch(f"the model names no sql_dialect (got {dialect!r}); expected the "
                            "JSON of a trained splink model, as DedupeResult.model holds")
    written = settings().create_settings_dict(dialect)
    for_spark = settings().create_settings_dict("spark")
    levels: dict[str, str] = {}
    for comparison, spark_comparison in zip(written["comparisons"], for_spark["comparisons"],
                                            strict=True):
        for level, spark_level in zip(comparison["comparison_levels"],
                                      spark_comparison["comparison_levels"], strict=True):
            levels[level["sql_condition"]] = spark_level["sql_condition"]
    rules: dict[str, str] = {}
    for rule, spark_rule in zip(written["blocking_rules_to_generate_predictions"],
                                for_spark["blocking_rules_to_generate_predictions"],
                                strict=True):
        rules[rule["blocking_rule"]] = spark_rule["blocking_rule"]

    converted = copy.deepcopy(model)
    converted["sql_dialect"] = "spark"
    for comparison in converted.get("comparisons", []):
        for level in comparison["comparison_levels"]:
            sql = level["sql_condition"]
            if sql not in levels:
                raise ModelMismatch(
                    f"the model's comparison {comparison.get('output_column_name')!r} has the "
                    f"level {sql!r}, which settings() does not write for {dialect}: retrain "
                    "the model with the current comparisons")
            level["sql_condition"] = levels[sql]
    blocking = []
    for rule in converted.get("blocking_rules_to_generate_predictions", []):
        sql = rule["blocking_rule"] if isinstance(rule, dict) else rule
        if sql not in rules:
            raise ModelMismatch(f"the model's blocking rule {sql!r} is not one that settings() "
                                f"writes for {dialect}: retrain the model")
        blocking.append({"blocking_rule": rules[sql], "sql_dialect": "spark"})
    converted["blocking_rules_to_generate_predictions"] = blocking
    return converted


def row_schema() -> StructType:
    """The Spark schema of ``patient_row``s."""
    from pyspark.sql.types import ArrayType, StringType, StructField, StructType

    return StructType([StructField(name, StringType()) for name in TEXT_FIELDS]
                      + [StructField(name, ArrayType(StringType())) for name in LIST_FIELDS])


@contextmanager
def local_spark(java_options: tuple[str, ...] = ()) -> Iterator[SparkSession]:
    """A Spark session in this process (``local[*]``) with splink's similarity functions, its
    scratch space (checkpoints, shuffle files, warehouse, logging configuration) in a
    temporary folder removed afterwards. ``java_options`` go to the driver's JVM: for short
    runs on few cores (tests), ``-XX:TieredStopAtLevel=1`` spares the optimising compiler's
    time, about half the run; for long runs it costs more than it saves."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable("PySpark is not installed: pip install 'chartkeeper[spark]'"
                               ) from exc
    from splink.backends.spark import similarity_jar_location

    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").exists()) and not shutil.which("java"):
        raise SparkUnavailable("Spark needs Java 17 or later and found no java on PATH or in "
                               "JAVA_HOME (on Debian: apt-get install openjdk-17-jre-headless)")
    if SparkSession.getActiveSession() is not None:
        # getOrCreate would hand back that session without splink's jar, and stop it after.
        raise SparkUnavailable("a Spark session is already running in this process: pass it "
                               "as spark= instead of starting a local one")
    # Spark's Python workers are this interpreter (the venv's), not whatever python3 is on
    # PATH: that one may lack pyspark, or be another Python version.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory(prefix="chartkeeper-spark-") as folder:
        scratch = Path(folder)
        (scratch / "log4j2.properties").write_text(_LOG4J2)
        # Two partitions per core keep a small shuffle from running as 200 empty tasks.
        partitions = str(2 * (os.cpu_count() or 1))
        session = (
            SparkSession.builder.master("local[*]")
            .appName("chartkeeper-mpi")
            .config("spark.jars", similarity_jar_location())  # jaro_winkler and friends
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", partitions)
            .config("spark.default.parallelism", partitions)
            .config("spark.local.dir", str(scratch / "local"))
            .config("spark.sql.warehouse.dir", str(scratch / "warehouse"))
            .config("spark.driver.extraJavaOptions", " ".join(
                (f"-Dlog4j2.configurationFile=file:{scratch / 'log4j2.properties'}",
                 *java_options)))
            .getOrCreate()
        )
        try:
            session.sparkContext.setLogLevel("ERROR")
            session.sparkContext.setCheckpointDir(str(scratch / "checkpoints"))
            yield session
        finally:
            session.stop()


def dedupe_rows_spark(rows: list[dict[str, Any]], model: dict[str, Any],
                      thresholds: Thresholds | None = None, *,
                      spark: SparkSession | None = None,
                      on_progress: Callable[[str], None] | None = None) -> DedupeResult:
    """Score the likely pairs among ``rows`` (``patient_row``s) with a trained ``model`` on
    Spark: on ``spark`` when given (a site's session, left running: it needs splink's jar,
    ``splink.backends.spark.similarity_jar_location()``, in ``spark.jars`` and a checkpoint
    directory), else on a local session started and stopped for this run. The result's
    ``model`` is ``model`` as given, so it stays usable on DuckDB."""
    thresholds = thresholds or Thresholds()
    say = on_progress or (lambda _message: None)
    result = DedupeResult(len(rows))
    if len(rows) < 2:
        return result
    unknown = sorted({key for row in rows for key in row} - {*TEXT_FIELDS, *LIST_FIELDS})
    if unknown:
        raise ValueError(f"rows have fields with no Spark type: {unknown}; expected "
                         f"{[*TEXT_FIELDS, *LIST_FIELDS]} (add them to chartkeeper.mpi.spark)")
    converted = spark_model(model)
    if spark is not None:
        records = _predict(spark, rows, converted, thresholds, say)
    else:
        say("starting Spark")
        with local_spark() as session:
            records = _predict(session, rows, converted, thresholds, say)
    result.model = copy.deepcopy(model)
    classify(result, pairs(records, result.model), thresholds)
    say(f"{len(result.links)} links, {len(result.review)} to review")
    return result


def _predict(spark: SparkSession, rows: list[dict[str, Any]], model: dict[str, Any],
             thresholds: Thresholds, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """splink's scored records for the pairs at or above the review threshold."""
    from splink import Linker, SparkAPI

    api = SparkAPI(spark_session=spark)  # type: ignore[no-untyped-call]
    _check_similarity_functions(spark)
    patients = spark.createDataFrame(
        [tuple(row.get(name) for name in (*TEXT_FIELDS, *LIST_FIELDS)) for row in rows],
        row_schema())
    linker = Linker(api.register(patients), model, log_level=30)
    say("scoring candidate pairs")
    records: list[dict[str, Any]] = linker.inference.predict(
        threshold_match_probability=thresholds.review).as_record_list()
    return records


def _check_similarity_functions(spark: SparkSession) -> None:
    """Fail before scoring, not halfway through, when splink's Scala UDFs are missing."""
    from pyspark.errors import AnalysisException
    from splink.backends.spark import similarity_jar_location

    try:
        spark.sql("select jaro_winkler('martha', 'marhta')").collect()
    except AnalysisException as exc:
        raise SparkUnavailable("the Spark session has no jaro_winkler: start it with "
                               f"spark.jars={similarity_jar_location()}") from exc
