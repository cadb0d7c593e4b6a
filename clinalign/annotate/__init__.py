"""Annotation: candidate answers become items that clinicians (web app) or a SIMULATED panel judge.

The package's parts: ``campaigns`` (a round of annotation and its rules: the ``annotate campaign``
stage), ``queue`` (which item a clinician sees next, and the one way a judgement is taken in),
``active`` (queue order from reward-model uncertainty and disagreement: ``annotate prioritise``) and
``panel`` (the simulated panel the demo runs: the ``annotate`` stage, judging through the queue).
"""
