"""Studies: one command per claim of the normalization literature, then a report.

A study script (``scripts/ioffe_mnist.py``, ``scripts/santurkar.py`` ...) declares a
``Study`` (its runs as overrides of shared configs, the paper's claim, how to report it)
and hands it to ``main``, which runs every ``normzoo fit`` side by side on the devices it
has and finishes with ``normzoo report``. See ``spec`` (what a study is), ``estimate``
(how long it takes) and ``runner`` (carrying it out).
"""

from normzoo.studies.runner import main, run_study
from normzoo.studies.spec import MODES, TINY_ARGS, Study, StudyRun, plan_runs

__all__ = ["MODES", "TINY_ARGS", "Study", "StudyRun", "main", "plan_runs", "run_study"]
