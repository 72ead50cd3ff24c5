"""Networks, prompt encoders and model folders.

* The interface every family presents: :mod:`.family` (the contract), :mod:`.adapter`,
  :mod:`.student`, :mod:`.teacher`, :mod:`.bundle`, :mod:`.condition`, :mod:`.text_cache`.
* The built-in family: :mod:`.builtin` (TinyDiT, its layers, the word-level prompt encoder).
* The diffusers families, one folder each: :mod:`.families` (``sana/``, ``flux/``, ...).
* :mod:`.registry`: the one place that names the families.
"""
