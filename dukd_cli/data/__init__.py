"""Data handling: the exact degradation (MATLAB bicubic ``imresize``), benchmark sets, the catalogue
and fetching, and finding training images (``discover``: what a ``--data`` value names)."""
