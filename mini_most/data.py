"""0.3.0's home of the corpus and the tokens, kept for one release (see the README's changelog).

The corpus moved to `mini_most.corpus` and the tokens to `mini_most.tokens`: import from there.
Every name this module had still imports from here, `data.speak` is `corpus.espeak`, and
`python -m mini_most.data ...` runs `python -m mini_most.corpus ...`.
"""

from __future__ import annotations

import warnings

from .corpus import (  # noqa: F401
    GAIN,
    PITCHES,
    SAMPLE_RATE,
    SHIPPED_CORPUS,
    SPEEDS,
    SPLITS,
    TEMPLATES,
    VARIANTS,
    VOICES,
    WORDS,
    Corpus,
    Utterance,
    build,
    encode_corpus,
    espeak,
    espeak_available,
    espeak_version,
    export_samples,
    load_corpus,
    main,
    sentence,
    split_of,
    vocabulary,
)
from .tokens import (  # noqa: F401
    IGNORE,
    MARKERS,
    STAGE1_MIX,
    TASKS,
    Batch,
    Example,
    Tokenizer,
    batches,
    collate,
    prompts,
    task_stream,
)

speak = espeak  # 0.3.0's name; ablate.speak is the model speaking, this is espeak-ng

warnings.warn("mini_most.data is now mini_most.corpus (the corpus) and mini_most.tokens (the tokens); "
              "mini_most.data goes in 0.5.0", DeprecationWarning, stacklevel=2)

if __name__ == "__main__":
    main()
