"""The DICOM network node: receive (C-STORE), pseudonymize through the per-file path, forward;
and fetch (C-FIND, then C-GET or C-MOVE) from a PACS into the same path."""
