"""The residual-PHI check of an output against its input, one file and a whole tree."""
