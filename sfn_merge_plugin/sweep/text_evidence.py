"""Evidence a level can be read from in the text alone: non-words, loops, and echoes of the prompt.

``nonword_rate`` (chunks that are not words or formulas), ``novel_mask`` (which units repeat an earlier
n-gram: a loop being copied), ``tail_run`` (how many words at the end are one or two words over and over),
``copied_mask`` (which units sit inside an n-gram of a given context, e.g. the system prompt),
``shuffled`` (a reproducible shuffle) and ``echo`` (how much of a response is the prompt's own words, and
how many content words it adds). Pure functions, no model.
"""

from __future__ import annotations

import random
import re

REPEAT_N = 4  # a unit ending an n-gram seen earlier in the response is a repeat
ECHO_N = 3  # a response word inside an n-gram of the prompt's words is copied from it

_WORD = re.compile(r"^[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*$")
_NUMERIC = re.compile(r"^[\\\w{}^_.,+\-*/=()<>$%]+$")
_STUTTER = re.compile(r"^(.{2,})\1{2,}$")  # one chunk three or more times: "ofofof", "ingeingeinge"
_MATH_ONLY = re.compile(r"^[+\-*/=<>^%\u00d7\u00f7\u00b7\u2248\u2264\u2265\u2212]+$")
_STRIP = "\"'()[]{}<>.,;:!?*`#_\u2018\u2019\u201c\u201d-\u2013\u2014\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f"


def nonword_rate(text: str) -> float:
    """Share of whitespace-separated chunks that are neither words nor numbers/formulas (0 for no chunks).

    A word is letters (any script) with inner apostrophes or hyphens; Latin-script words longer than 25
    letters, of 5+ letters without a vowel, or one chunk repeated 3+ times ("ofofof") are not words.
    Chunks with a digit or a backslash count as formulas when made of word characters and math symbols.
    Operators and short punctuation runs are ignored."""
    counted = bad = 0
    for chunk in text.split():
        if _MATH_ONLY.match(chunk):  # "+", "=", "×" between numbers
            continue
        core = chunk.strip(_STRIP)
        if not core:
            if len(chunk) > 3:
                counted += 1
                bad += 1
            continue
        counted += 1
        if _WORD.match(core):
            if core.isascii() and (len(core) > 25 or (len(core) >= 5 and not re.search(r"[aeiouyAEIOUY]", core))
                                   or _STUTTER.match(core.lower())):
                bad += 1
        elif not (re.search(r"[\d\\]", core) and _NUMERIC.match(core)):
            bad += 1
    return bad / counted if counted else 0.0


def novel_mask(units: list, n: int = REPEAT_N) -> list:
    """False for a unit that ends an n-gram already seen earlier in the sequence (a loop being copied)."""
    seen, mask = set(), []
    for i in range(len(units)):
        if i + 1 < n:
            mask.append(True)
            continue
        gram = tuple(units[i + 1 - n:i + 1])
        mask.append(gram not in seen)
        seen.add(gram)
    return mask


def tail_run(text: str, distinct: int = 2) -> int:
    """How many words at the end of ``text`` are at most ``distinct`` different words ("... 5- or 6- or or or
    or" ends in 12 words of two kinds): a model stuck on one or two words, however it started. Words are
    whitespace-separated chunks with a letter, compared without case and edge punctuation; numbers and symbols
    between them neither count nor interrupt the run ("6 + 6 + 6 + 6" and "1,000,000,000" are not loops)."""
    seen, run = set(), 0
    for chunk in reversed(text.split()):
        word = chunk.strip(_STRIP).lower()
        if not re.search(r"[^\W\d_]", word):
            continue
        if word not in seen and len(seen) == distinct:
            break
        seen.add(word)
        run += 1
    return run


def copied_mask(units: list, context, n: int = REPEAT_N) -> list:
    """True for a unit inside an n-gram that also occurs in ``context`` (copied from it, e.g. a persona
    reply restating the system prompt "You are a helpful AI assistant named ...")."""
    context = list(context or ())
    grams = {tuple(context[i:i + n]) for i in range(len(context) - n + 1)}
    mask = [False] * len(units)
    for i in range(len(units) - n + 1):
        if tuple(units[i:i + n]) in grams:
            mask[i:i + n] = [True] * n
    return mask


def shuffled(units: list, seed: int = 0) -> list:
    """The same units in a random order, seeded by ``seed`` and the sequence itself (reproducible)."""
    out = list(units)
    random.Random(f"{seed}:{len(out)}:{out[:8]}").shuffle(out)
    return out


_ECHO_TOKEN = re.compile(r"[^\W_]+|[+\-*/=%^]")
# function words and the words any answer is framed with: adding them adds nothing to the prompt
FUNCTION_WORDS = frozenset("""
a an the and or but if so of to in on at by for with from as into about than then that this these those it its
is are was were be been being am do does did has have had will would can could should may might must shall
i you he she we they me him her us them my your his our their what which who whom whose how why when where
not no yes there here just very also too all any some each
answer answers final result solution question questions number numbers equal equals let us s re ll ve d t
""".split())


def words(text: str) -> list:
    """Lower-case words, numbers and arithmetic operators of ``text`` (punctuation dropped)."""
    return _ECHO_TOKEN.findall(text.lower())


def echo(prompt: str, response: str, n: int = ECHO_N) -> tuple:
    """(share of the response's content words copied from the prompt, number of distinct content words of
    the response that the prompt does not have). Content words are the words and numbers outside
    ``FUNCTION_WORDS``; a word the prompt has is copied, a number only inside an n-gram of words that also
    occurs in the prompt (an answer is often a number of the question); operators count as copied but are
    never a word of one's own. "The sky is blue." after "Explain why the sky is blue." is (1.0, 0): an echo;
    "The coffee shop." after "Suggest a name for a new coffee shop." is (1.0, 0): an echo too; "The capital
    of France is Paris." is (0.67, 1): an answer; "The final answer is 25." after "What is 17 + 25? Put the
    final answer in \\boxed{}." is (0.0, 0): its one content word, 25, is not part of a copied phrase."""
    p, r = words(prompt), words(response)
    content = [i for i, w in enumerate(r) if w not in FUNCTION_WORDS]
    if not content:
        return 0.0, 0
    grams = {tuple(p[i:i + n]) for i in range(len(p) - n + 1)}
    vocab = set(p)
    copied = [not w[0].isdigit() and w in vocab for w in r]
    for i in range(len(r) - n + 1):
        if tuple(r[i:i + n]) in grams:
            for j in range(i, i + n):
                copied[j] = True
    own = {w for w in r if w not in vocab and w not in FUNCTION_WORDS and w[0].isalnum()}
    return sum(copied[i] for i in content) / len(content), len(own)
