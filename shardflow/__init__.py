"""shardflow: image folders and archives -> sharded TFRecords (Beam) -> tf.data streams -> Keras trainers."""
import logging

__version__ = "0.1.0"


class _QuietOptionalGcpClients(logging.Filter):
    """Beam's filesystem import warns that BigQuery's optional apitools client is missing; we never use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_QuietOptionalGcpClients())
