"""Quality instruments: numbers that say whether a run's annotations are any good.

* :mod:`grand_engine.quality.gcg` — GLaMM's grounded conversation generation (GCG) figures (AP50, METEOR, CIDEr,
  mIoU, mask recall) of predictions against a ground truth; the pairing, matching and scoring functions are public
  so that other instruments can reuse them with any pair of annotation sets.
* :mod:`grand_engine.quality.gcg_inputs` — ground truth and predictions in GLaMM's layout, in a GranD-f export of
  this project, or in a run's ``grandf`` table, checked and turned into :class:`~grand_engine.quality.gcg.GCGImage`.
* :mod:`grand_engine.quality.captions` — caption tokenisation (Stanford PTB through java, or a Python fallback),
  METEOR and CIDEr from pycocoevalcap's scorers.
* :mod:`grand_engine.quality.text_similarity` — the phrase encoder behind mask recall's text-similarity test.

The command is ``grand-engine evaluate gcg`` (:mod:`grand_engine.cli.evaluate`); ``docs/quality.md`` explains each
figure. Submodules are imported on use so that the command line starts fast.
"""
