"""pseudo: pseudonymize DICOM for research, with a key vault and logged re-identification."""

__version__ = "0.1.0"
