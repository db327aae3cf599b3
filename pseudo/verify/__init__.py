"""The residual-PHI check of an output against its input, one file and a whole tree.

Modules, read top-down: :mod:`~pseudo.verify.recording` records, while a file is pseudonymized,
every value of the input that must not survive, as it is (its :mod:`~pseudo.verify.needles`,
in their usual spellings, are built once the output is written);
:mod:`~pseudo.verify.prefilter` tells, by words, which of them an output may hold at all (only
their needles are built); :mod:`~pseudo.verify.matching` searches text and bytes for all of
them at once; :mod:`~pseudo.verify.check` checks one output
(:func:`~pseudo.verify.check.finish`: against its own input); :mod:`~pseudo.verify.crossfile`
checks UIDs and references across the files of a run; :mod:`~pseudo.verify.report` is the
result for a tree. :mod:`~pseudo.verify.elements` reads elements and values without converting
them; :mod:`~pseudo.verify.finding` is what is reported.
"""
