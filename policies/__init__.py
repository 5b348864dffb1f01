"""keystead.policies: least-privilege IAM from a spec, and a lint for any policy.

Pure Python, no cloud SDK. The public surface::

    load_spec(path) / parse_spec(mapping)  -> Spec        (SpecError names the field)
    documents(spec, arns=None)             -> {relative path: document}
    write(spec, out_dir, arns=None)        -> [paths written]
    lint_paths([file or dir, ...])         -> (documents, findings)
    RULES                                  the lint rules by id
"""

from .generate import documents, write
from .lint import lint_paths
from .rules import RULES, Finding
from .spec import Spec, load_spec, parse_spec

__all__ = ["RULES", "Finding", "Spec", "documents", "lint_paths", "load_spec", "parse_spec",
           "write"]
