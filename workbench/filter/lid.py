"""Language-ID ensemble: a weighted vote of the members in :data:`workbench.filter.members.MEMBERS`
(by default fastText lid.176, CLD2 and langid.py; langdetect, lingua, cld3 and an extra fastText
model on request).

Each member maps its own labels to registry codes through the ``[lid]`` table of every language
file (``languages/*.toml``); a member whose label for the expected language is ``"unsupported"``
abstains for that language. A text's decision is a weighted vote:

    support = sum(weight_m for voting members m whose top label is in the accept set
                  with probability >= min_prob) / sum(weight_m for voting members)

where the voting members are those whose label set covers the expected language and that gave
an answer (CLD2 says ``un`` for many short texts: it abstains rather than counting against).

The text is accepted when ``support >= threshold`` AND ``support > 1/2``: a clear majority, never
a tie (one member for, one against is not an acceptance). ``threshold`` and ``min_prob`` are the
language file's ``lid_threshold`` / ``lid_min_prob`` when set, else ``filter.lid_threshold`` /
``filter.member_min_prob``. A rejected text is ``wrong_language`` when one other label holds a
majority of the voting weight, else ``uncertain`` (reason ``lid_uncertain``: split votes).

The accept set is strict by default: the expected language plus only the codes its language file
lists in ``accept_also`` (bs/hr/sr, with the reason in the file). ``filter.allow_confusable = true``
(``--allow-confusable``) adds the whole confusable group, the old lenient policy. When the
majority names an accept-also language rather than the expected one, the decision records it in
``accepted_as`` so the audit counts those rows separately.

Members are asked cheapest first, until the verdict is settled: once the expected language's own
votes hold a clear majority whatever the rest say (a Swahili text that CLD2 and fastText both call
Swahili never reaches langid), or one other language does (CLD2 and fastText both say English).
Split votes ask every covering member, so an ``lid_uncertain`` row keeps every vote. Texts too
short for statistical LID (fewer than ``min_lid_letters`` letters) are judged by the caller
together with the other short fields of their example (see :mod:`workbench.filter.rules`); for
them the decision also carries the vote shares of English and of the confusable neighbours.
Votes are cached by the digest of the text LID sees (``filter.lid_cache_size``): a member's vote
depends on the text alone.

Every member's vote is returned as a :class:`Vote` (member, label, prob) so rejects can show why.
Labels a member outputs that no registry language uses keep the member's own label prefixed with
``?`` (e.g. ``?ceb``), so the audit can still count them as confusions.

Example::

    ensemble = Ensemble.load(registry, config.filter)
    decision = ensemble.decide("Habari ya asubuhi, rafiki yangu.", "sw")
    decision.accepted, decision.support, decision.seen_as
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from workbench.errors import ConfigError
from workbench.filter.members import MEMBERS, UNSUPPORTED, LidMember, lid176_path  # noqa: F401 (re-exported)
from workbench.languages import Registry

log = logging.getLogger(__name__)

UNKNOWN = "?"  # a member produced no usable answer


@dataclass(frozen=True)
class Vote:
    member: str
    label: str  # registry code, or "?<member label>" for labels outside the registry, or "?"
    prob: float


@dataclass(frozen=True)
class Decision:
    """The ensemble's verdict on one text for one expected language."""

    accepted: bool | None  # None: not voted (no member covers the language or none answered)
    support: float  # weighted share of voting members naming the accept set (0..1)
    seen_as: str  # the weighted-plurality label over all members (what the text looks like)
    votes: tuple[Vote, ...]
    uncertain: bool = False  # rejected without a majority for any single other label (split vote)
    accepted_as: str | None = None  # accepted, but the majority named this accept-also language
    # weighted shares of voting members naming the likely wrong answers, what a generator slides
    # into: English, and a confusable neighbour, each outside the accept set (the short-field rule)
    english: float = 0.0
    neighbour: float = 0.0


@dataclass(frozen=True)
class _Policy:
    """What deciding for one expected language needs, looked up once per language."""

    threshold: float
    min_prob: float
    accept: frozenset[str]
    wrong: frozenset[str]
    covering: tuple  # (member, weight) of the members that can name the language, cheapest first
    covering_names: frozenset[str]
    covering_weight: float  # their weights' sum


class Ensemble:
    """Weighted vote of LID members whose labels are mapped to registry codes."""

    def __init__(self, members: list[LidMember], labels: dict[str, dict[str, str]], registry: Registry,
                 weights: dict[str, float], threshold: float, member_min_prob: float,
                 allow_confusable: bool, max_chars: int, cache_size: int = 0):
        self.members = members
        self.registry = registry
        self.weights = weights
        self.threshold = threshold
        self.member_min_prob = member_min_prob
        self.allow_confusable = allow_confusable
        self.max_chars = max_chars
        # member -> registry code -> member label (None when unsupported)
        self._label_of = labels
        # member -> member label -> registry code
        self._code_of = {
            member: {label: code for code, label in mapping.items() if label != UNSUPPORTED}
            for member, mapping in labels.items()
        }
        self._accept_sets: dict[str, frozenset[str]] = {}
        self._wrong_sets: dict[str, frozenset[str]] = {}
        self._covering_members: dict[str, list[LidMember]] = {}
        self._policies: dict[str, _Policy] = {}
        # votes by text digest: a member's vote depends on the text alone, and generated data
        # repeats texts (labels, hard negatives, duplicates dedup drops later); FIFO, bounded
        self.cache_size = cache_size
        self._cache: dict[bytes, dict[str, Vote]] = {}
        self._hits = self._misses = 0

    @classmethod
    def load(cls, registry: Registry, section) -> "Ensemble":
        """Build the ensemble from the ``[filter]`` section: its members with a positive weight."""
        built: list[LidMember] = []
        labels: dict[str, dict[str, str]] = {}
        for name in section.members:
            if section.weights.get(name, 0.0) <= 0:
                continue
            if name not in MEMBERS:
                raise ConfigError(f"unknown LID member '{name}'", where="filter.members",
                                  fix=f"use {', '.join(MEMBERS)}")
            member = MEMBERS[name](section)
            built.append(member)
            labels[name] = member.labels(registry, section)
        if not built:
            raise ConfigError("no LID member has a positive weight", where="filter.weights")
        built.sort(key=lambda m: m.cost)  # cheapest first, for lazy voting
        return cls(built, labels, registry, dict(section.weights), section.lid_threshold,
                   section.member_min_prob, section.allow_confusable, section.lid_max_chars, section.lid_cache_size)

    def likely_wrong_set(self, code: str) -> frozenset[str]:
        """English and the confusable neighbours, less the accept set: the answers a generator that
        cannot write ``code`` gives instead."""
        if code not in self._wrong_sets:
            self._wrong_sets[code] = frozenset({"en", *self.registry.confusables(code)}) - self.accept_set(code)
        return self._wrong_sets[code]

    def accept_set(self, code: str) -> frozenset[str]:
        """The language, its ``accept_also`` codes, and its confusable group when the run allows it."""
        if code not in self._accept_sets:
            group = self.registry.confusables(code) if self.allow_confusable else set()
            self._accept_sets[code] = frozenset({code, *self.registry.accept_also(code), *group})
        return self._accept_sets[code]

    def threshold_for(self, code: str) -> float:
        value = self.registry.get(code).lid_threshold
        return self.threshold if value is None else value

    def min_prob_for(self, code: str) -> float:
        value = self.registry.get(code).lid_min_prob
        return self.member_min_prob if value is None else value

    def covers(self, code: str) -> list[str]:
        return [m.name for m in self.members if self._label_of[m.name].get(code, UNSUPPORTED) != UNSUPPORTED]

    def _vote(self, member: LidMember, snippet: str) -> Vote:
        label, prob = member.predict(snippet)
        code = self._code_of[member.name].get(label) if label else None
        return Vote(member.name, code or (f"?{label}" if label else UNKNOWN), round(prob, 4))

    def _cached(self, snippet: str) -> tuple[dict[str, Vote], dict[str, Decision]]:
        """What is already known about ``snippet``: its votes by member and its decisions by expected
        language (dicts to add to; fresh ones when caching is off). A decision depends on the votes
        and the language alone, so a repeated text is decided once per language."""
        if not self.cache_size:
            return {}, {}
        key = hashlib.blake2b(snippet.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        known = self._cache.get(key)
        if known is None:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            known = self._cache[key] = ({}, {})
        return known

    def _vote_cached(self, member: LidMember, snippet: str, known: dict[str, Vote]) -> Vote:
        vote = known.get(member.name)
        if vote is None:
            self._misses += 1
            vote = known[member.name] = self._vote(member, snippet)
        else:
            self._hits += 1
        return vote

    def cache_info(self) -> str:
        asked = self._hits + self._misses
        share = f"{self._hits / asked:.1%}" if asked else "-"
        return f"{self._hits:,} of {asked:,} member votes from the cache ({share}), {len(self._cache):,} texts held"

    def votes(self, text: str) -> tuple[Vote, ...]:
        """Every member's vote on ``text`` (used by benchmarks; the filter uses :meth:`decide`)."""
        snippet = text[: self.max_chars]
        known = self._cached(snippet)[0]
        return tuple(self._vote_cached(member, snippet, known) for member in self.members)

    def _covering(self, code: str) -> list[LidMember]:
        if code not in self._covering_members:
            self._covering_members[code] = [m for m in self.members
                                            if self._label_of[m.name].get(code, UNSUPPORTED) != UNSUPPORTED]
        return self._covering_members[code]

    def _policy(self, code: str) -> _Policy:
        policy = self._policies.get(code)
        if policy is None:
            covering = self._covering(code)
            policy = self._policies[code] = _Policy(
                self.threshold_for(code), self.min_prob_for(code), self.accept_set(code), self.likely_wrong_set(code),
                tuple((m, self.weights.get(m.name, 0.0)) for m in covering), frozenset(m.name for m in covering),
                sum(self.weights.get(m.name, 0.0) for m in covering))
        return policy

    def _lazy_votes(self, snippet: str, code: str, policy: _Policy, known: dict[str, Vote]) -> tuple[Vote, ...]:
        """Votes of the covering members, cheapest first, until the language's own votes settle an acceptance."""
        threshold, min_prob, accept = policy.threshold, policy.min_prob, policy.accept
        remaining = policy.covering_weight
        own = answered = 0.0
        others: dict[str, float] = {}  # label outside the accept set -> weight
        out = []
        for member, weight in policy.covering:
            bound = answered + remaining
            # settled accept: even if every remaining member answers something else, the expected
            # language alone keeps a clear majority (so accepted_as is the same as with all votes)
            if answered and own >= threshold * bound and own > 0.5 * bound:
                break
            # settled wrong_language: one other language holds a majority whatever the rest say
            if others and max(others.values()) > 0.5 * bound:
                break
            vote = self._vote_cached(member, snippet, known)
            out.append(vote)
            remaining -= weight
            label = vote.label
            if label == UNKNOWN:
                continue  # no answer (CLD2 'un', langdetect failure): the member abstains
            answered += weight
            if label == code and vote.prob >= min_prob:
                own += weight
            elif label not in accept:
                others[label] = others.get(label, 0.0) + weight
        return tuple(out)

    def decide(self, text: str, code: str, votes: tuple[Vote, ...] | None = None) -> Decision:
        """Accept ``text`` as ``code``? Without ``votes``, members are asked lazily (same verdict)."""
        policy = self._policies.get(code) or self._policy(code)
        if votes is not None:
            return self._decision(votes, code, policy)
        snippet = text[: self.max_chars]
        known, decided = self._cached(snippet)
        decision = decided.get(code)
        if decision is not None:  # the same text decided for the same language before
            self._hits += len(decision.votes)
            return decision
        decision = decided[code] = self._decision(self._lazy_votes(snippet, code, policy, known), code, policy)
        return decision

    def _decision(self, votes: tuple[Vote, ...], code: str, policy: _Policy) -> Decision:
        accept, threshold, min_prob, covering = policy.accept, policy.threshold, policy.min_prob, policy.covering_names
        tally: dict[str, float] = {}
        voting: dict[str, float] = {}  # label -> weight, covering members only
        supporting: dict[str, float] = {}  # accept-set label -> weight of confident votes
        total = 0.0
        for vote in votes:
            weight = self.weights.get(vote.member, 0.0)
            if vote.label == UNKNOWN:
                continue  # no answer: abstains
            tally[vote.label] = tally.get(vote.label, 0.0) + weight * max(vote.prob, 1e-3)
            if vote.member not in covering:
                continue  # this member cannot name the expected language: it abstains
            total += weight
            voting[vote.label] = voting.get(vote.label, 0.0) + weight
            if vote.label in accept and vote.prob >= min_prob:
                supporting[vote.label] = supporting.get(vote.label, 0.0) + weight
        seen_as = max(tally, key=tally.get) if tally else UNKNOWN
        if total == 0:
            return Decision(None, 0.0, seen_as, votes)
        share = sum(supporting.values()) / total
        english = round(voting.get("en", 0.0) / total, 4) if "en" in policy.wrong else 0.0
        neighbour = round(sum(w for label, w in voting.items() if label in policy.wrong and label != "en") / total, 4)
        if share >= threshold and share > 0.5:
            top = max(supporting, key=lambda label: (supporting[label], label == code))
            return Decision(True, round(share, 4), seen_as, votes, accepted_as=None if top == code else top,
                            english=english, neighbour=neighbour)
        other_majority = any(w > 0.5 * total for label, w in voting.items() if label not in accept)
        return Decision(False, round(share, 4), seen_as, votes, uncertain=not other_majority,
                        english=english, neighbour=neighbour)
