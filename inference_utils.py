"""The import path of everything inference shares, for code written against earlier versions: it all
lives in the `inference` package now, one idea a module (`inference.model` for the model options and
loading, `inference.cli`, `inference.matting`, `inference.files`, `inference.plates`,
`inference.colour`, `inference.readers`, `inference.writers`, `inference.pipeline`), and is
re-exported here.
"""
from common.devices import PRECISIONS, resolve_device  # noqa: F401
from common.devices import inference_dtype as resolve_precision  # noqa: F401  (its earlier name)
from inference.cli import *  # noqa: F401,F403
from inference.colour import *  # noqa: F401,F403
from inference.files import *  # noqa: F401,F403
from inference.matting import *  # noqa: F401,F403
from inference.model import *  # noqa: F401,F403
from inference.pipeline import *  # noqa: F401,F403
from inference.plates import *  # noqa: F401,F403
from inference.readers import *  # noqa: F401,F403
from inference.writers import *  # noqa: F401,F403
from model.model import RUNTIME_SETTINGS as TORCHSCRIPT_SETTINGS  # noqa: F401  (its earlier name)
