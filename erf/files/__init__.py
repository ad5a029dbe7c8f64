"""File I/O that knows nothing of receptive fields: atomic writes (:mod:`~erf.files.atomic`), output sets that
are whole or not at all with one writer per path (:mod:`~erf.files.outputs`), the bounded scan of pickle and
safetensors files before anything is loaded (:mod:`~erf.files.safeload`), checkpoint files read and written
safely, code refused unless trusted (:mod:`~erf.files.checkpoint_io`), and image files opened with a pixel cap
(:mod:`~erf.files.images`).
Nothing is imported here: ``import erf.files`` stays cheap and torch-free; import the module you need.
"""
