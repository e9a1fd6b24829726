"""The errors a user can act on. `faceturn.cli.main` prints any `FaceturnError` as one line naming the file and the
problem and exits with status 2; anything else is a bug and keeps its traceback.

`FaceturnError` is a `ValueError` (bad input or state), so callers that catch `ValueError` keep working. Subclasses
exist where a caller needs to tell the cases apart.
"""

from __future__ import annotations


class FaceturnError(ValueError):
    """Bad input or state that the user can fix; the message names the file (or key) and the problem."""


class ConfigError(FaceturnError):
    """A config file or override that does not fit its dataclass; the message names the key."""


class SchemaError(FaceturnError):
    """Face channels or a stored tensor that do not fit the A61 schema."""


class CorpusError(FaceturnError):
    """A corpus folder, manifest or conversation file that cannot be read as asked."""


class CheckpointError(FaceturnError):
    """A checkpoint that cannot be used here; the message names the folder and what differs or is missing."""


class RunDirError(FaceturnError):
    """A run or output folder that cannot be used as asked (e.g. not empty without --resume)."""


class TrainingDiverged(FaceturnError):
    """The training loss became non-finite (NaN or inf): the learning rate or the data need a look."""


class JobError(FaceturnError):
    """One or more jobs of a plan failed; the message names each and its log."""


class ClusterError(FaceturnError):
    """The cluster refused or cannot take the jobs (SLURM's reason quoted), or its tools are missing here."""
