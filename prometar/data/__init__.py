"""Data: the 15 benchmark datasets, few-shot sampling, class splits, transforms and loaders.

One module per concept, each imported by its own path (nothing is re-exported here, so reading
the catalog — sweep validation in the launch driver — never imports torch):

- ``catalog``: where each dataset lives, its split source, class count and zero-shot template;
- ``readers``: the on-disk layouts into items (``read_dataset``);
- ``fewshot``: the field's K-shot convention, cached atomically;
- ``splits``: the base/new cut and the search split inside the base classes;
- ``transforms`` and ``loaders``: images into tensors (torch);
- ``check``: is a data root usable (``prometar-sweep data check``);
- ``miniature``: tiny copies of every layout, for tests; ``toyworld``: the demo's toy datasets.
"""
