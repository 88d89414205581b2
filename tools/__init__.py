"""Developer tools that are not part of the product: the simulated message gateway."""
