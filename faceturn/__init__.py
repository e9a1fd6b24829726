"""faceturn: make full-duplex spoken dialogue models see the face.

Importing the package loads only torch-free, numpy-only modules; everything heavy is imported where it is used.
"""

__version__ = "0.1.0"
