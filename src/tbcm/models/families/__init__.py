"""The diffusers families, one folder each: network wrapper (``network.py``), prompt encoder
(``text.py``), teacher / student folders (``bundle.py``), export where a pipeline runs the
student (``export.py``), and the family's :class:`~tbcm.models.family.Family` in ``__init__.py``.
``common.py`` is what they share. The registry (:mod:`tbcm.models.registry`) names them.
"""
