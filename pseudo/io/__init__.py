"""Files: reading (with a fast header scan), writing, durability. pydicom internals stay here."""
