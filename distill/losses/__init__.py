"""The losses, one module per loss or loss family, each registered in :data:`distill.registry.LOSSES`.

Importing this package imports every module in it, in name order, so a new loss module registers
itself by being here: nothing else names it. Each module's docstring gives its formulas and gradient.
"""

import importlib
import pkgutil

for _module in sorted(module.name for module in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
