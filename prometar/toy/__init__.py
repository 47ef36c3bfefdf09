"""The toy world, its datasets, the toy CLIP and the cached toy build (for the CPU demo and tests).

``world`` (rendered coloured shapes and captions), ``datasets`` (toy stand-ins for the 11
base-to-new datasets in their real layouts), ``clip`` (the toy CLIP and its pretraining),
``zeroshot`` (its zero-shot accuracy), ``build`` (the cached build: ``build_toy``) and
``miniature`` (tiny copies of every benchmark layout, for tests). The training core never imports
this package; the application (the ``demo`` and ``toy`` verbs), tests and benchmarks do.
"""
