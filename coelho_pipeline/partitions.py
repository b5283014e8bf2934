"""One partition per delivered source commit: the full 40-hex SHA, one partition set per target."""

import dagster as dg

from coelho_pipeline.targets import Target


def source_commits(target: Target) -> dg.DynamicPartitionsDefinition:
    """``source_commits`` with a single target; ``source_commits__<project>__<environment>`` with several.

    An environment promoted from another shares the partitions of its chain's first environment: a
    commit keeps its partition from the push to the last environment, so the UI lines them up."""
    return dg.DynamicPartitionsDefinition(name=target.root().name("source_commits"))
