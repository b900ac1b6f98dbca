"""MLflow "models from code": this file is stored with every hpsearch model and run when the model loads.

It replaces a cloudpickle of the model object, so loading a model runs readable source, never unpickles. The
model's code is the copy saved beside this file (``code/hpsearch_model``, MLflow's ``code_paths``), so a model
runs the code it was saved with, and loads where hpsearch is not installed.

MLflow puts each loaded model's ``code_paths`` in front of ``sys.path`` but keeps a package that an earlier
model of the same process imported, from a temporary copy that may be gone: that package is forgotten first,
so that every model, however many a process loads, runs its own code.
"""

import sys

from mlflow.models import set_model

for _name in [m for m in sys.modules if m == "hpsearch_model" or m.startswith("hpsearch_model.")]:
    del sys.modules[_name]

try:
    from hpsearch_model.pyfunc import HpsearchModel
except ModuleNotFoundError as err:  # while saving: MLflow runs this file before the copy is on sys.path
    if err.name != "hpsearch_model":
        raise
    from hpsearch.model.pyfunc import HpsearchModel

set_model(HpsearchModel())
