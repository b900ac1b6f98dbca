"""MLflow "models from code": this file is stored with every hpsearch model and run when the model loads.

It replaces a cloudpickle of the model object, so loading a model runs readable source, never unpickles.
"""

from mlflow.models import set_model

from hpsearch.pyfunc import HpsearchModel

set_model(HpsearchModel())
