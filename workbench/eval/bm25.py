"""BM25 baseline (``bm25s``) behind mteb's search protocol, with language-aware tokenisation.

Tokens: NFKC, lower case, ``\\w+`` words. Words in scripts written without spaces (Han, Hiragana,
Katakana, Thai, Lao, Khmer, Myanmar) become overlapping character bigrams, the usual segmenter-free
choice for zh/ja/th. Other words are stemmed with the PyStemmer (Snowball) stemmer of the language
where one exists, and bm25s stop words are removed where it has a list. Because BM25 runs as an mteb
``SearchProtocol`` model, its scores come from the same evaluator as the embedders' and land in the
same results table with ``system = "bm25"``.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import TYPE_CHECKING, Any

import regex
from mteb.models.model_meta import ModelMeta

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata

log = logging.getLogger(__name__)

# language code -> PyStemmer algorithm (Stemmer.algorithms()); absent: no stemming
STEMMERS = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "cs": "czech", "da": "danish",
    "nl": "dutch", "en": "english", "eo": "esperanto", "et": "estonian", "fi": "finnish", "fr": "french",
    "de": "german", "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish",
    "it": "italian", "lt": "lithuanian", "ne": "nepali", "no": "norwegian", "fa": "persian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian",
    "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}
# language code -> bm25s stop-word list key
STOPWORDS = {"en": "STOPWORDS_EN", "de": "STOPWORDS_GERMAN", "nl": "STOPWORDS_DUTCH", "fr": "STOPWORDS_FRENCH",
             "es": "STOPWORDS_SPANISH", "pt": "STOPWORDS_PORTUGUESE", "it": "STOPWORDS_ITALIAN",
             "ru": "STOPWORDS_RUSSIAN", "sv": "STOPWORDS_SWEDISH", "no": "STOPWORDS_NORWEGIAN",
             "zh": "STOPWORDS_CHINESE", "ko": "STOPWORDS_KOREAN", "tr": "STOPWORDS_TURKISH", "da": "STOPWORDS_DANISH"}
_WORD = regex.compile(r"\w+")
_NO_SPACE_RUN = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]+")


class Tokenizer:
    """Text -> BM25 tokens for one language (see the module docstring)."""

    def __init__(self, language: str | None):
        self.language = language
        self.stemmer = None
        name = STEMMERS.get(language or "")
        if name:
            import Stemmer

            self.stemmer = Stemmer.Stemmer(name)
        self.stopwords: frozenset[str] = frozenset()
        if language in STOPWORDS:
            import bm25s.stopwords

            self.stopwords = frozenset(getattr(bm25s.stopwords, STOPWORDS[language]))

    def __call__(self, text: str) -> list[str]:
        tokens: list[str] = []
        for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
            if _NO_SPACE_RUN.search(word):
                position = 0
                for run in _NO_SPACE_RUN.finditer(word):
                    self._words(word[position : run.start()], tokens)
                    chars = run.group()
                    tokens.extend([chars] if len(chars) == 1 else [chars[i : i + 2] for i in range(len(chars) - 1)])
                    position = run.end()
                self._words(word[position:], tokens)
            else:
                self._words(word, tokens)
        return tokens

    def _words(self, word: str, out: list[str]) -> None:
        if not word or word in self.stopwords:
            return
        out.append(self.stemmer.stemWord(word) if self.stemmer else word)


def _language_of(task_metadata: TaskMetadata, hf_subset: str) -> str | None:
    """Two-letter code for stemming: the subset name when it is one (ours and MIRACL's are)."""
    if regex.fullmatch(r"[a-z]{2,3}", hf_subset or ""):
        return hf_subset
    langs = task_metadata.eval_langs
    codes = langs.get(hf_subset, []) if isinstance(langs, dict) else langs
    iso3 = {c.split("-")[0] for c in codes}
    from workbench.languages import load_registry

    for lang in load_registry() if iso3 else []:
        if lang.iso639_3 in iso3:
            return lang.code
    return None


class BM25Search:
    """mteb ``SearchProtocol`` over bm25s: Lucene BM25 with Anserini's defaults k1=0.9, b=0.4 (the
    settings of the published MIRACL BM25 baseline)."""

    def __init__(self, k1: float = 0.9, b: float = 0.4):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s logs DEBUG per call

        self.k1, self.b = k1, b
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites=dict(name="workbench/bm25s", revision=f"bm25s-{bm25s.__version__}-k1{k1}-b{b}", framework=[])
        )
        self._index: Any = None
        self._doc_ids: list[str] = []
        self._tokenizer: Tokenizer | None = None

    def index(self, corpus: Any, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str, **kwargs: Any) -> None:
        import bm25s

        language = _language_of(task_metadata, hf_subset)
        self._tokenizer = Tokenizer(language)
        log.info("bm25 %s: stemmer=%s stopwords=%d", hf_subset, STEMMERS.get(language or ""), len(self._tokenizer.stopwords))
        titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
        texts = [(f"{t} {x}".strip() if t else x.strip()) for t, x in zip(titles, corpus["text"], strict=True)]
        self._doc_ids = [str(i) for i in corpus["id"]]
        self._index = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        self._index.index([self._tokenizer(t) for t in texts], show_progress=False)

    def search(self, queries: Any, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str, top_k: int, **kwargs: Any) -> dict[str, dict[str, float]]:
        assert self._index is not None and self._tokenizer is not None, "index() first"
        vocab = self._index.vocab_dict
        k = min(top_k, len(self._doc_ids))
        results: dict[str, dict[str, float]] = {}
        qids = [str(q) for q in queries["id"]]
        tokens = [[t for t in self._tokenizer(text) if t in vocab] for text in queries["text"]]
        todo = [i for i, toks in enumerate(tokens) if toks]
        for i, toks in enumerate(tokens):
            if not toks:
                results[qids[i]] = {}  # no query term occurs in the corpus: nothing retrieved
        if todo and k > 0:
            docs, scores = self._index.retrieve([tokens[i] for i in todo], k=k, show_progress=False, n_threads=1)
            for row, i in enumerate(todo):
                results[qids[i]] = {
                    self._doc_ids[int(d)]: float(s) for d, s in zip(docs[row], scores[row], strict=True) if s > 0
                }
        empty = sum(1 for i in range(len(tokens)) if not tokens[i])
        if empty:
            log.warning("bm25 %s: %d queries share no term with the corpus (scored 0)", hf_subset, empty)
        return results


__all__ = ["BM25Search", "Tokenizer"]
