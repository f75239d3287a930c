"""runcast's composition root: the `runcast` console script, which wires gateway and worker together."""
