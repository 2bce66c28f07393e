"""The networks of the agents: trunks and heads (``networks``), their kernels for stacked weights
(``stacked``), the recurrent sequence kernels (``rnn_kernels``, ``scan_cell``) and unit surgery (``units``)."""
