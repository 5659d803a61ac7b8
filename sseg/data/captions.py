"""Caption processing: keep the nouns and verbs of a caption (GroupViT-style).

With nltk's perceptron tagger data installed, words tagged NN/NNS/NNP/NNPS or VB* are kept (GroupViT
keeps exactly these). Offline machines usually lack the tagger data; then a documented fallback runs:
lower-cased alphabetic words minus an English stop-word list, numerals, colour and size adjectives.
``caption_words_method()`` says which one runs, so jobs can log it to MLflow.
"""

from __future__ import annotations

import functools
import re

_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]*")

# Function words plus the adjectives/numerals that captions use most. Not nouns or verbs, so dropping
# them approximates POS filtering; nouns and most verbs survive.
_STOP_WORDS = frozenset("""
a an the this that these those there here it its it's they them their theirs he she his her him we us our
you your i me my mine and or but nor so yet of in on at by for with without from to into onto over under
above below between among through during before after near beside behind across along around against
up down out off about is are was were be been being am has have had having do does did will would can
could should may might must shall not no yes as than then too very just also only some any each every
all both few many much more most other another such own same one two three four five six seven eight
nine ten several lots lot little big small large tiny huge giant red green blue yellow orange purple
pink brown black white gray grey dark light bright pale colorful colourful old new young good nice
beautiful pretty cute happy while where when what which who whom whose why how if because until
photo picture image shot view close closeup stock free royalty illustration
""".split())


@functools.lru_cache(maxsize=1)
def _nltk_tagger():
    try:
        import nltk

        for resource in ("taggers/averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger"):
            try:
                nltk.data.find(resource)
                return nltk.pos_tag
            except LookupError:
                continue
    except ImportError:
        pass
    return None


def caption_words_method() -> str:
    """``"nltk-pos"`` when the POS tagger data is installed, else ``"stopword-filter"``."""
    return "nltk-pos" if _nltk_tagger() is not None else "stopword-filter"


def tokenize_words(caption: str) -> list[str]:
    return [w.strip("'-").lower() for w in _WORD.findall(caption) if w.strip("'-")]


def extract_words(caption: str) -> list[str]:
    """The caption's nouns and verbs, lower-cased, in order, duplicates removed."""
    words = tokenize_words(caption)
    tagger = _nltk_tagger()
    if tagger is not None:
        kept = [w for w, tag in tagger(words) if tag.startswith("NN") or tag.startswith("VB")]
    else:
        kept = [w for w in words if w not in _STOP_WORDS and len(w) > 1]
    return list(dict.fromkeys(kept))
