"""The code location of P6's floor (``bench_daemon.idle_floor``): it defines nothing, so what
``dagster dev`` spends idle with it is Dagster's own cost, which the pipeline's idle figure includes."""

import dagster as dg

defs = dg.Definitions()
