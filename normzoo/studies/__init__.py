"""Studies: one command per claim of the normalization literature, then a report.

``normzoo study --list`` shows the catalog (``normzoo.studies.catalog``); ``normzoo study
santurkar --quick`` runs one: every ``normzoo fit`` side by side on the devices there are,
then ``normzoo report``. See ``spec`` (what a study is), ``estimate`` (how long it takes),
``runner`` (carrying it out) and ``command`` (the ``normzoo study`` command). Each run trains
once per seed (``SEEDS``); the report shows a mean and a 95% interval over the seeds and
judges the study's claims from them (``normzoo.report.claims``). A ``Study`` of
one's own runs the same way from a script: ``sys.exit(main(STUDY))``.
"""

from normzoo.studies.catalog import STUDIES, find_study
from normzoo.studies.runner import main, run_study
from normzoo.studies.spec import MODES, SEEDS, TINY_ARGS, Study, StudyDiagnostic, StudyRun, plan_runs

__all__ = ["MODES", "SEEDS", "STUDIES", "TINY_ARGS", "Study", "StudyDiagnostic", "StudyRun", "find_study", "main",
           "plan_runs", "run_study"]
