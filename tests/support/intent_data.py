"""A labeled search-intent set for the flywheel: the six ``search_intent`` labels, built offline.

No labeled intent corpus ships in a package this project can install (PyPI/npm were searched:
SNIPS, CLINC, BANKING77, ATIS are hub downloads only), so the set is generated from query
templates per intent with slot values. ``held_out=True`` draws every slot value from a second,
disjoint pool, so a held-out query never repeats a word the training queries filled in: a model
has to learn the intent patterns, not memorise the queries. The guideline's own examples and the
shipped samples are not reproduced (they are few-shot examples of the base pre-annotator).
"""

from __future__ import annotations

import random
from typing import Any

LABELS = ("navigational", "informational", "transactional", "entertainment", "educational", "other")

_TEMPLATES: dict[str, list[str]] = {
    "navigational": ["{site} login", "{site} sign in page", "{site} official website", "go to {site}",
                     "{site} homepage", "{site} account settings", "{site} customer support page", "{site}.com"],
    "informational": ["how old is {person}", "what is the capital of {country}", "population of {country}",
                      "when was {person} born", "what time is it in {city}", "distance from {city} to {city2}",
                      "why is the sky blue in {city}", "how many people live in {city}"],
    # Labelled by the search_intent guideline: buying, booking, ordering; checking or comparing
    # prices ("{product} best price", "cheap {product} deals") is informational, the very error
    # the seed's spot check looks for, so no such query is labelled transactional here.
    "transactional": ["buy {product} online", "purchase {product} today", "order {product} with free delivery",
                      "book a hotel in {city}", "flights from {city} to {city2}", "reserve a table in {city}",
                      "rent a car in {city}", "discount code for {product}"],
    "entertainment": ["funny {animal} videos", "watch {show} online", "{artist} live concert video",
                      "play {game} for free", "{artist} greatest hits playlist", "{show} season finale clips",
                      "memes about {animal}s", "{game} gameplay stream"],
    "educational": ["{subject} course for beginners", "learn {subject} step by step", "{subject} lecture notes pdf",
                    "free online {subject} class", "{subject} practice exercises with solutions",
                    "{subject} tutorial for students", "study guide for {subject} exam",
                    "{subject} textbook chapter 1"],
    "other": ["{noise}", "{noise} {noise2}", "{word}", "{word} {noise}", "{noise}???", "ok {word}"],
}

# Two disjoint pools per slot: index 0 for the training project, 1 for held-out tasks.
_FILLS: dict[str, tuple[list[str], list[str]]] = {
    "site": (["gmail", "netflix", "linkedin", "paypal", "dropbox", "spotify", "twitter", "ebay", "reddit", "zoom"],
             ["outlook", "hulu", "github", "venmo", "slack", "tiktok", "pinterest", "etsy", "twitch", "quora"]),
    "person": (["barack obama", "albert einstein", "taylor swift", "lionel messi", "queen elizabeth"],
               ["angela merkel", "marie curie", "beyonce", "serena williams", "nelson mandela"]),
    "country": (["france", "japan", "brazil", "canada", "egypt", "norway"],
                ["peru", "kenya", "vietnam", "finland", "chile", "morocco"]),
    "city": (["paris", "tokyo", "berlin", "madrid", "chicago", "sydney"],
             ["lisbon", "seoul", "vienna", "dublin", "boston", "toronto"]),
    "city2": (["london", "rome", "new york", "dubai"], ["prague", "oslo", "miami", "athens"]),
    "product": (["running shoes", "a laptop", "headphones", "a coffee maker", "a phone case", "winter jacket"],
                ["a tablet", "a backpack", "sunglasses", "a desk lamp", "a smartwatch", "hiking boots"]),
    "animal": (["cat", "dog", "parrot", "goat", "duck", "horse"], ["hamster", "penguin", "otter", "raccoon", "owl",
                                                                   "panda"]),
    "show": (["the office", "friends", "stranger things", "the simpsons", "game of thrones", "south park"],
             ["seinfeld", "the crown", "breaking bad", "family guy", "the mandalorian", "futurama"]),
    "artist": (["ed sheeran", "drake", "adele", "coldplay", "bruno mars", "katy perry"],
               ["shakira", "eminem", "rihanna", "metallica", "lady gaga", "the weeknd"]),
    "game": (["minecraft", "tetris", "solitaire", "fortnite", "chess", "mahjong"],
             ["sudoku", "pacman", "roblox", "checkers", "backgammon", "zelda"]),
    "subject": (["algebra", "python programming", "organic chemistry", "french grammar", "statistics", "physics"],
                ["calculus", "java programming", "biology", "german vocabulary", "economics", "geometry"]),
    "noise": (["asdf", "qwerty", "zzzz", "hjkl", "xxyy", "aaaa", "dfgdfg"],
              ["lkjh", "mnbv", "poiu", "wwww", "ghgh", "bbbb", "sdfsdf"]),
    "noise2": (["123", "!!", "...", "0"], ["456", "??", "---", "9"]),
    "word": (["hmm", "test", "hello", "thing"], ["yes", "whatever", "blah", "stuff"]),
}


def queries(per_label: int, *, held_out: bool = False, seed: int = 0) -> list[dict[str, str]]:
    """``per_label`` distinct ``{"text", "label"}`` rows per intent, shuffled (deterministic)."""
    rng = random.Random(seed * 2 + int(held_out))
    pool = 1 if held_out else 0
    rows: list[dict[str, str]] = []
    for label in LABELS:
        seen: set[str] = set()
        for _ in range(per_label * 200):
            if len(seen) == per_label:
                break
            template = rng.choice(_TEMPLATES[label])
            text = template.format(**{slot: rng.choice(values[pool]) for slot, values in _FILLS.items()})
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label})
        if len(seen) < per_label:
            raise ValueError(f"only {len(seen)} distinct {label} queries; ask for fewer")
    rng.shuffle(rows)
    return rows


def labeled_tasks(rows: list[dict[str, str]], control: str = "intent", to_name: str = "text") -> list[dict[str, Any]]:
    """Label Studio import payload: each task with one human annotation of its label."""
    return [{"data": {"text": row["text"]},
             "annotations": [{"result": [{"from_name": control, "to_name": to_name, "type": "choices",
                                          "value": {"choices": [row["label"]]}}]}]}
            for row in rows]
