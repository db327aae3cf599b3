"""Burned-in text in pixel data: find it (rules, a detector), blank it, prove it is gone."""
