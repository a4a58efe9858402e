"""Gene-structure grammar: labels, transitions, length tables, frame rules (DESIGN.md §2).

Load with :func:`load_grammar` (default: the packaged genoseg/configs/grammar.yaml) and
compile a genome window into engine inputs with :func:`compile_window`.
"""

from genoseg.grammar.compile import (
    MAX_DUR_UNBOUNDED,
    StructuralInputs,
    compile_window,
    compile_window_np,
    max_dur_fast,
    max_dur_reference,
    segment_allowed,
)
from genoseg.grammar.spec import (
    FrameRule,
    Grammar,
    Label,
    LengthModel,
    MotifRule,
    default_grammar_path,
    grammar_from_yaml,
    load_grammar,
    reverse_complement,
)

__all__ = [
    "MAX_DUR_UNBOUNDED",
    "FrameRule",
    "Grammar",
    "Label",
    "LengthModel",
    "MotifRule",
    "StructuralInputs",
    "compile_window",
    "compile_window_np",
    "default_grammar_path",
    "grammar_from_yaml",
    "load_grammar",
    "max_dur_fast",
    "max_dur_reference",
    "reverse_complement",
    "segment_allowed",
]
