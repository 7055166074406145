"""Stage 3, nets: the survival models and their maths. Importing this package fills the model
registry the way timm does: the model files register their classes as they are imported, and the
registry itself imports no model file."""

from survfusion.nets import fusions, linear, models  # noqa: F401  (registration happens at import)
