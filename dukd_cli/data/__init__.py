"""Data handling: the exact degradation (MATLAB bicubic ``imresize``) and, later, training data."""
