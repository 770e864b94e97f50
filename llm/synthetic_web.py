"""Generated raw web data for the `clean` tests and benchmark (no download): HTML pages with the boilerplate real
pages have (menus, cookie banners, footers), and the kinds of pages FineWeb's steps exist to remove.

    article_html(rng)        an English article page: nav, cookie banner, 6-10 paragraphs, footer (kept)
    english_text(rng, n)     n sentences of plain English prose
    foreign_text(rng, lang)  French or German prose (removed when English is kept)
    near_duplicate(text, rng, changes)   the text with a few words replaced (removed by MinHash)
    spam_text(rng)           a page of repeated sales lines (Gopher repetition)
    menu_text(rng)           short lines without punctuation (FineWeb/C4 line rules)
    mixed_corpus(n, seed)    a list of JSONL records ({"html"|"text", "url"}) mixing all of the above, with e-mails
                             and IP addresses in some articles and some pages on blocked domains

Sentences are drawn from word lists by templates, so documents differ from each other (no accidental
near-duplicates) while reading enough like prose for the Gopher, C4 and FineWeb rules to keep them.
"""

from __future__ import annotations

import random

NOUNS = ("river", "bridge", "council", "garden", "library", "village", "engineer", "teacher", "market", "harbour",
         "museum", "forest", "station", "painter", "doctor", "farmer", "student", "kitchen", "window", "mountain",
         "journey", "festival", "hospital", "factory", "orchestra", "newspaper", "island", "castle", "valley",
         "company", "project", "report", "meeting", "storm", "winter", "summer", "road", "ferry", "school", "city")
ADJECTIVES = ("old", "new", "small", "quiet", "busy", "famous", "local", "northern", "ancient", "modern", "narrow",
              "wide", "bright", "dark", "careful", "strange", "popular", "rural", "wooden", "heavy", "early", "late")
VERBS = ("visited", "described", "repaired", "opened", "closed", "watched", "crossed", "studied", "painted",
         "finished", "planned", "reported", "discovered", "protected", "improved", "measured", "followed", "built")
ADVERBS = ("slowly", "quickly", "quietly", "finally", "carefully", "often", "rarely", "suddenly", "always", "soon")
PEOPLE = ("the mayor", "a young engineer", "the old farmer", "my neighbour", "the committee", "a local teacher",
          "the museum's director", "two students", "the harbour master", "a visiting doctor", "our team")
PREPOSITIONS = ("in", "near", "behind", "beside", "across", "under", "above", "around", "beyond", "along")
CONNECTORS = ("because", "although", "while", "after", "before", "since", "until", "when")
ENDINGS = (".", ".", ".", ".", "!", "?")
FOREIGN = {
    "fr": ("Le {n} {a} a été {v} par le conseil de la ville, qui veut protéger la {n2} avant l'hiver.",
           "Dans la {n2} du village, les habitants ont {v} une nouvelle {n2} pour les enfants de l'école.",
           "Selon le maire, la {n2} sera {v} au printemps prochain si le budget le permet.",
           "Nous avons appris que le {n} était {a} depuis longtemps, mais personne ne voulait en parler.",
           "Les ingénieurs ont expliqué que le {n} ne pouvait pas être {v} avant la fin de l'année."),
    "de": ("Der {n} wurde vom Stadtrat {v}, weil die {n2} vor dem Winter geschützt werden soll.",
           "Im Dorf haben die Bewohner eine neue {n2} für die Kinder der Schule {v}.",
           "Laut dem Bürgermeister wird die {n2} im nächsten Frühling {v}, wenn das Geld reicht.",
           "Wir haben erfahren, dass der {n} seit langer Zeit {a} war, aber niemand wollte darüber sprechen.",
           "Die Ingenieure erklärten, dass der {n} nicht vor dem Ende des Jahres {v} werden kann."),
}
FOREIGN_WORDS = {
    "fr": {"n": ("pont", "marché", "musée", "jardin", "port", "château"), "a": ("vieux", "fermé", "célèbre", "calme"),
           "v": ("réparé", "ouvert", "construit", "fermé", "visité"), "n2": ("bibliothèque", "rivière", "gare",
                                                                             "place", "route", "forêt")},
    "de": {"n": ("Brücke", "Markt", "Museum", "Garten", "Hafen", "Turm"), "a": ("alt", "geschlossen", "berühmt"),
           "v": ("repariert", "geöffnet", "gebaut", "geschlossen", "besucht"), "n2": ("Bibliothek", "Straße",
                                                                                  "Schule", "Halle", "Kirche")},
}
MENU = ("Home", "News", "Sport", "Weather", "About us", "Contact", "Login", "Shop", "Blog", "Careers", "Help")
COOKIE = ("We use cookies to improve your experience on our site. By continuing to browse you accept our use of "
          "cookies. Accept all cookies | Manage settings")
FOOTER = "Copyright 2024 Example Media Ltd. All rights reserved. Privacy policy | Terms of use | Cookie policy"
BLOCKED_DOMAINS = ("example-spam.com", "free-casino-bonus.com")


def _phrase(rng: random.Random) -> str:
    return f"{rng.choice(('the', 'a', 'every', 'one', 'that'))} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def sentence(rng: random.Random) -> str:
    """One sentence from a small grammar: few fixed words, so no two documents share long n-grams by accident."""
    subject = rng.choice(PEOPLE) if rng.random() < 0.5 else _phrase(rng)
    words = [subject, rng.choice(ADVERBS) if rng.random() < 0.3 else "", rng.choice(VERBS), _phrase(rng),
             rng.choice(PREPOSITIONS), _phrase(rng)]
    if rng.random() < 0.5:
        words += [rng.choice(CONNECTORS), rng.choice(PEOPLE), rng.choice(VERBS), _phrase(rng)]
    text = " ".join(word for word in words if word)
    return text[0].upper() + text[1:] + rng.choice(ENDINGS)


def english_text(rng: random.Random, sentences: int = 30, per_paragraph: int = 4) -> str:
    """Plain English prose: `sentences` sentences in paragraphs of about `per_paragraph`."""
    lines = [" ".join(sentence(rng) for _ in range(per_paragraph)) for _ in range(max(1, sentences // per_paragraph))]
    return "\n".join(lines)


def foreign_text(rng: random.Random, language: str = "fr", sentences: int = 24) -> str:
    words = FOREIGN_WORDS[language]
    out = []
    for _ in range(sentences // 4):
        out.append(" ".join(rng.choice(FOREIGN[language]).format(**{k: rng.choice(v) for k, v in words.items()})
                            for _ in range(4)))
    return "\n".join(out)


def with_pii(text: str, rng: random.Random) -> str:
    name = rng.choice(("anna", "ben", "chloe", "dev"))
    ip = f"{rng.randint(11, 99)}.{rng.randint(1, 250)}.{rng.randint(1, 250)}.{rng.randint(1, 250)}"
    return text + f"\nFor questions write to {name}.{rng.randint(1, 999)}@mail-example.org or visit the server at {ip}."


def article_html(rng: random.Random, body: str | None = None, title: str | None = None) -> str:
    """An article page: the text in <article> paragraphs between a menu, a cookie banner and a footer."""
    body = body if body is not None else english_text(rng, rng.randint(24, 40))
    title = title or f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    paragraphs = "\n".join(f"<p>{line}</p>" for line in body.split("\n"))
    menu = " | ".join(f'<a href="/{item.lower().replace(" ", "-")}">{item}</a>' for item in MENU)
    return (f"<!DOCTYPE html><html><head><title>{title}</title><script>var tracking = {{id: 42}};</script></head>"
            f"<body><nav>{menu}</nav><div class=\"cookie-banner\">{COOKIE}</div>"
            f"<article><h1>{title}</h1>\n{paragraphs}\n</article>"
            f"<aside><h3>Most read</h3><ul>{''.join(f'<li><a href=/{i}>{sentence(rng)[:40]}</a></li>' for i in range(5))}"
            f"</ul></aside><footer>{FOOTER}</footer></body></html>")


def near_duplicate(text: str, rng: random.Random, changes: int = 3) -> str:
    """`text` with `changes` words replaced by other words."""
    words = text.split(" ")
    for index in rng.sample(range(len(words)), min(changes, len(words))):
        words[index] = rng.choice(NOUNS)
    return " ".join(words)


def spam_text(rng: random.Random) -> str:
    offer = rng.choice(("cheap watches", "free followers", "casino bonus", "weight loss pills"))
    return "\n".join(f"Buy {offer} now! Best {offer} online, best price, click here." for _ in range(40))


def menu_text(rng: random.Random) -> str:
    return "\n".join(rng.choice(MENU) for _ in range(60))


def mixed_corpus(documents: int, seed: int = 0) -> list[dict]:
    """`documents` JSONL records: about 55 % English articles (as HTML; some with PII; 10 % of them followed by a
    near-duplicate with three words changed), 15 % French/German pages, 10 % spam, 5 % menus, 5 % plain-text
    English, 5 % on blocked domains, 5 % lorem ipsum."""
    rng = random.Random(seed)
    records: list[dict] = []
    while len(records) < documents:
        number = len(records)
        roll = rng.random()
        url = f"https://site{rng.randint(1, 500)}.example.org/page/{number}"
        if roll < 0.55:
            body = english_text(rng, rng.randint(24, 40))
            if rng.random() < 0.2:
                body = with_pii(body, rng)
            records.append({"html": article_html(rng, body), "url": url})
            if rng.random() < 0.1 and len(records) < documents:
                records.append({"html": article_html(rng, near_duplicate(body, rng)),
                                "url": url.replace("/page/", "/copy/")})
        elif roll < 0.70:
            records.append({"html": article_html(rng, foreign_text(rng, rng.choice(("fr", "de")))), "url": url})
        elif roll < 0.80:
            records.append({"html": article_html(rng, spam_text(rng)), "url": url})
        elif roll < 0.85:
            records.append({"text": menu_text(rng), "url": url})
        elif roll < 0.90:
            records.append({"text": english_text(rng, 20)})
        elif roll < 0.95:
            records.append({"html": article_html(rng), "url": f"https://www.{rng.choice(BLOCKED_DOMAINS)}/{number}"})
        else:
            records.append({"text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20, "url": url})
    return records
