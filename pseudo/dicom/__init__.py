"""DICOM vocabulary: tags, value representations, private creators."""
