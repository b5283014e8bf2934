"""One partition per delivered source commit: the full 40-hex SHA."""

import dagster as dg

source_commits = dg.DynamicPartitionsDefinition(name="source_commits")
