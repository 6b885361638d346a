"""Every archlab picture, drawn from plain data that registry/ and runners/ hand over.

``curves`` draws a run's or CV group's metric over its steps (``arch runs plot``), ``patches``
the patches each token pruning stage kept (``arch prune show``), ``explain`` relevance maps
(``arch explain``), ``embed`` 2-D maps of embeddings coloured by label (``arch embed``); each
checks and writes its file through ``save``. Nothing here queries a registry or runs a model,
and importing this package does not load matplotlib.
"""
