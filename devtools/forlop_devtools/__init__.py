"""forlop's development tools (the `forlop-devtools` distribution): the embedded demo, the synthetic
generator, the benchmark, the simulated receiver, chaos and fuzz runs. Never part of the image."""
