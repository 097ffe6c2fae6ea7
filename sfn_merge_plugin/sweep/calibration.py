"""The level grader's calibration: reference answers and the thresholds derived from them.

Thresholds are calibrated per undamaged model (``levels.calibrate``) on the reference answers shipped here
(``CALIBRATION``):
``max_nll`` and ``min_order`` lie midway between the medians of those answers and of the same answers
with their tokens shuffled; ``max_meaningful_nll`` 10% of the way from the first to the second;
``min_relevance`` midway between the answers after their own prompt and
after another reference prompt. A model that cannot tell these apart is flagged unreliable, and the
Level I rule it could not calibrate is switched off rather than calling everything random.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MEANINGFUL_SHARE = 0.1  # Level III needs nll <= reference + this share of (shuffled - reference); else II
BAND_ORDER_SHARE = 2 / 3  # text less likely than a plain answer keeps this share of the reference's order gain, or -> I

# (prompt, a fluent answer that fits it): the Level III reference; shuffled, the Level I reference;
# after another pair's prompt, the Level II reference.
CALIBRATION = (
    ("Describe a quiet morning in a small village.",
     "The village wakes up slowly. Smoke rises from a few chimneys, the baker opens his shop, and the only "
     "sounds are the birds and the distant bell of the church."),
    ("Why do people keep pets?",
     "People keep pets for company and comfort. A dog or a cat gives a daily routine, affection and a reason "
     "to go outside, and many owners say that their pets make them feel calmer and less lonely."),
    ("What should I pack for a weekend hiking trip?",
     "Pack sturdy boots, a rain jacket, warm layers, a map, enough water and snacks, a small first aid kit and "
     "a head torch. Keep the bag light, because you will carry it all day."),
    ("Summarise the water cycle.",
     "Water evaporates from the oceans and lakes, rises as vapour, cools and condenses into clouds, and falls "
     "back as rain or snow. It then flows through rivers and soil back to the sea, and the cycle starts again."),
    ("Give some advice to a student who is preparing for an exam.",
     "Start early and study a little every day. Make a plan, practise with old exam questions, sleep well the "
     "night before, and ask your teacher when something is not clear."),
    ("What is photosynthesis?",
     "Photosynthesis is the process that plants use to make their food. Using the energy of sunlight, they turn "
     "water and carbon dioxide into sugar and release oxygen into the air."),
    ("Write a thank-you note to a friend who helped you move house.",
     "Dear Sam, thank you so much for helping me move last weekend. I could not have carried all those boxes "
     "without you, and the new flat already feels like home. Dinner is on me next week!"),
    ("What is 9 times 6? Put the final answer in \\boxed{}.",
     "Nine times six means adding six nine times: 6 + 6 + 6 + 6 + 6 + 6 + 6 + 6 + 6 = 54. So the answer is "
     "\\boxed{54}."),
)


@dataclass
class Calibration:
    fluent_nll: float
    shuffled_nll: float
    fluent_order: float
    shuffled_order: float
    own_relevance: float
    other_relevance: float

    @property
    def max_nll(self) -> float:
        return (self.fluent_nll + self.shuffled_nll) / 2

    @property
    def max_meaningful_nll(self) -> float:
        """Level III text is about as likely as the median reference answer (within MEANINGFUL_SHARE of the way
        from it to its shuffle)."""
        return self.fluent_nll + MEANINGFUL_SHARE * (self.shuffled_nll - self.fluent_nll)

    @property
    def min_order(self) -> float:
        return (self.fluent_order + self.shuffled_order) / 2

    @property
    def min_band_order(self) -> float:
        """The order gain that text beyond ``max_meaningful_nll`` needs to read as sentences (Level II) rather
        than tokens (I): BAND_ORDER_SHARE of the way from shuffled to reference text."""
        return self.shuffled_order + BAND_ORDER_SHARE * (self.fluent_order - self.shuffled_order)

    @property
    def min_relevance(self) -> float:
        return (self.own_relevance + self.other_relevance) / 2

    @property
    def nll_separates(self) -> bool:
        """Reference text is clearly (>= 10%) more likely than its shuffle: the nll rule can be used."""
        return self.shuffled_nll - self.fluent_nll >= 0.1 * abs(self.shuffled_nll)

    @property
    def order_separates(self) -> bool:
        """Shuffling costs reference text clearly (>= 2% of the shuffled nll) more than shuffled text."""
        return self.fluent_order - self.shuffled_order >= 0.02 * abs(self.shuffled_nll)

    @property
    def relevance_separates(self) -> bool:
        return self.own_relevance - self.other_relevance >= 0.02

    @property
    def reliable(self) -> bool:
        return self.nll_separates and self.order_separates and self.relevance_separates

    def problems(self) -> list:
        out = []
        if not self.nll_separates:
            out.append(f"the undamaged model finds reference text ({self.fluent_nll:.2f} nats/token) barely more likely "
                       f"than the same tokens shuffled ({self.shuffled_nll:.2f}): the nll rule for Level I is off")
        if not self.order_separates:
            out.append(f"shuffling costs reference text ({self.fluent_order:.2f} nats/token) hardly more than shuffled "
                       f"text ({self.shuffled_order:.2f}): the order-gain rule for Level I is off")
        if not self.relevance_separates:
            out.append(f"a prompt raises its own answer's likelihood ({self.own_relevance:+.3f} nats/token) no more than "
                       f"another prompt's ({self.other_relevance:+.3f}): Level II vs III is unreliable")
        return out

    def as_dict(self) -> dict:
        d = {k: round(v, 4) for k, v in asdict(self).items()}
        d.update(max_nll=round(self.max_nll, 4), max_meaningful_nll=round(self.max_meaningful_nll, 4), min_order=round(self.min_order, 4),
                 min_band_order=round(self.min_band_order, 4),
                 min_relevance=round(self.min_relevance, 4), reliable=self.reliable, problems=self.problems())
        return d
