"""Which e-messages a pathway's history owes, to whom: plain values and pure functions, no I/O."""
