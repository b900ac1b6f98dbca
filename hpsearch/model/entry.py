"""MLflow "models from code": this file is stored with every hpsearch model and run when the model loads.

It replaces a cloudpickle of the model object, so loading a model runs readable source, never unpickles. The
model's code is the copy saved beside this file (``code/hpsearch_model``, MLflow's ``code_paths``), so a model
runs the code it was saved with, and loads where hpsearch is not installed.
"""

from mlflow.models import set_model

try:
    from hpsearch_model.pyfunc import HpsearchModel
except ModuleNotFoundError as err:  # while saving: MLflow runs this file before the copy is on sys.path
    if err.name != "hpsearch_model":
        raise
    from hpsearch.model.pyfunc import HpsearchModel

set_model(HpsearchModel())
