"""Training runs: one seed (``run``) or a population (``population_run``), what both share
(``run_common``), checkpoints and exact resume (``checkpoint``), non-finite guards (``finite``) and
the plasticity readouts logged during training (``plasticity``)."""
