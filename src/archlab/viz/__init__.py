"""Every archlab picture, drawn from plain data that registry/ and runners/ hand over.

``curves`` draws a run's or CV group's metric over its steps (``arch runs plot``), ``patches``
the patches each token pruning stage kept (``arch prune show``); both check and write their file
through ``save``. Nothing here queries a registry or runs a model, and importing this package
does not load matplotlib.
"""
