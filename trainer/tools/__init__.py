"""Data tools: converters to TFRecords, dataset verification, the local cluster, the tutorials' reproduction."""
