"""Figures, videos and the interactive viewer: pure functions of prediction and result files (matplotlib, PyAV).

Nothing here is imported by `import faceturn`; each module imports matplotlib or PyAV inside its functions.
"""
