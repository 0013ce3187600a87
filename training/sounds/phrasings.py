"""Text prompts of the `tiny-sounds` corpus: many training phrasings per kind, and held-out ones.

Why so many: with 7 phrasings per kind the generator learned those 7 MiniLM embeddings and
little around them, so unseen phrasings ("a high-pitched bleep") fell between kinds (65 %
generated accuracy on held-out phrasings vs 92.5 % on training phrasings). Each kind now has
~36 training phrasings: the hand-written ones, plus phrases built from the kind's ATTRIBUTE
words x NOUN synonyms x SOURCES ("a deep drone", "a hum from a fridge"), so the training
prompts cover the region of embedding space where people's descriptions of that sound land.

Held out: 6 phrasings per kind that are never trained on (the 3 of the first model, kept so
figures stay comparable, and 3 more). Disjointness is a rule, checked here and in the tests: no
training phrasing contains all the content words of a held-out phrasing (so "a deep bass hum"
cannot be trained while "a deep hum" is held out). Everything is a pure function of constants:
same list, same order, on every machine.
"""

from __future__ import annotations

import re

import numpy as np

KINDS: tuple[str, ...] = ("hum", "beep", "buzz", "hiss", "pluck", "drum", "siren", "tick", "chord", "babble")

PREFIXES: tuple[str, ...] = ("", "the sound of ", "a recording of ")
TRAIN_PER_KIND = 36
_BUILD_SEED = 20261125  # fixed: orders the template candidates; never tuned

# First 7 per kind: the first model's training phrasings (the first one is the canonical prompt).
_WRITTEN: dict[str, tuple[str, ...]] = {
    "hum": ("a low humming tone", "deep electrical hum", "a low hum", "mains hum", "a droning bass tone",
            "low frequency hum of a transformer", "a steady low drone", "a fridge humming",
            "the hum of an electric motor", "a quiet constant hum", "an idling engine drone"),
    "beep": ("a high beep", "a high pitched beep", "electronic beeping", "a short sharp beep",
             "beeps from a machine", "a piercing high tone", "a microwave beep", "a digital alert tone",
             "a few quick beeps", "a heart monitor beep", "a pager beeping"),
    "buzz": ("a sawtooth buzz", "a harsh buzzing sound", "a buzzer", "a raspy synthesizer buzz",
             "an electric buzzer", "a buzzing sawtooth wave", "a nasal buzzing tone", "a game show buzzer",
             "a buzzing kazoo", "a distorted synth tone", "a bright brassy drone"),
    "hiss": ("white noise hiss", "a hissing sound", "static noise", "steam hissing", "radio static",
             "a constant hiss", "broadband noise", "air escaping from a valve", "a shushing noise",
             "tape hiss", "noise from an untuned radio"),
    "pluck": ("a plucked string", "a guitar string being plucked", "a single plucked note", "a harp pluck",
              "a plucked guitar note", "a pizzicato string", "a twanging string", "a plucked cello",
              "a harpsichord note", "a bass guitar pluck", "a koto string"),
    "drum": ("a drum hit", "a kick drum", "a bass drum thump", "a deep drum beat", "someone hitting a drum",
             "a booming drum", "a thud of a drum", "a floor tom", "a low thump", "a bass drum kick",
             "a single beat on a big drum"),
    "siren": ("a rising siren", "a siren going up in pitch", "an ascending whistle", "a rising tone",
              "an air raid siren winding up", "a sweep up in pitch", "a pitch rising upwards",
              "a slide whistle going up", "a tone getting higher", "a rising pitch sweep", "a whoop upward"),
    "tick": ("a ticking clock", "clock ticks", "a metronome ticking", "rapid clicking", "a tick tock of a clock",
             "regular clicks", "a clicking sound", "a wall clock", "a steady tick", "a clicking pen",
             "a bicycle wheel ticking"),
    "chord": ("a chord", "a major chord on an organ", "several notes played together", "a sustained chord",
              "a harmonious chord", "an organ chord", "a triad of notes", "a minor chord", "a strummed triad",
              "a chord of sine tones", "an electric piano chord"),
    "babble": ("speech-like babble", "people talking", "a person speaking", "mumbled voice",
               "someone talking indistinctly", "a voice babbling", "human speech", "a child babbling",
               "a voice in another room", "someone muttering", "vowel sounds of a voice"),
}

# Attribute words, noun synonyms and sources per kind: the template material.
_VOCAB: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "hum": (("low", "deep", "bass", "steady", "droning", "electrical", "soft", "dull"),
            ("hum", "drone", "humming", "bass note", "low tone"),
            ("of a fridge", "from a transformer", "from an amplifier", "of power cables", "of a motor")),
    "beep": (("high", "shrill", "piercing", "electronic", "short", "sharp", "digital", "bright"),
             ("beep", "tone", "beeping", "alert", "ping"),
             ("from a microwave", "of a timer", "from a scanner", "of an alarm", "from a phone")),
    "buzz": (("harsh", "raspy", "buzzy", "rough", "nasal", "electric", "loud", "reedy"),
             ("buzz", "buzzing", "sawtooth", "buzzer", "rasp"),
             ("of a synthesizer", "from an old doorbell", "of a sawtooth oscillator", "of a wasp")),
    "hiss": (("white", "steady", "noisy", "airy", "hissing", "rushing", "soft", "static"),
             ("hiss", "noise", "static", "hissing", "rush"),
             ("of steam", "from a radio", "of a tyre", "from a television", "of compressed air")),
    "pluck": (("plucked", "twangy", "bright", "short", "decaying", "picked", "nylon", "steel"),
              ("string", "pluck", "guitar note", "harp note", "twang"),
              ("on a guitar", "on a harp", "on a banjo", "on a lute", "on a zither")),
    "drum": (("deep", "booming", "thumping", "heavy", "punchy", "low", "muffled", "struck"),
             ("drum", "thud", "kick", "thump", "drum beat"),
             ("of a bass drum", "on a kit", "of a timpani", "of a marching drum")),
    "siren": (("rising", "ascending", "climbing", "upward", "swelling", "sliding", "wailing"),
              ("siren", "whistle", "sweep", "tone", "wail"),
              ("going up", "that rises", "getting higher", "sliding upwards", "climbing in pitch")),
    "tick": (("ticking", "clicking", "regular", "rhythmic", "sharp", "steady", "mechanical", "tiny"),
             ("clock", "tick tock", "click", "tick", "metronome"),
             ("of a clock", "of a watch", "of a metronome", "of a timer", "of a clockwork toy")),
    "chord": (("major", "minor", "sustained", "harmonious", "rich", "warm", "ringing", "full"),
              ("chord", "triad", "harmony", "organ chord", "chord of notes"),
              ("on an organ", "on a piano", "on a synthesizer", "on an accordion", "on a harmonium")),
    "babble": (("indistinct", "mumbled", "muffled", "murmured", "babbling", "garbled", "quiet", "talking"),
               ("speech", "voice", "babble", "talking", "chatter"),
               ("of a person", "of someone nearby", "of a man", "from a crowd", "through a wall")),
}

_HELD_OUT: dict[str, tuple[str, ...]] = {
    "hum": ("a deep hum", "the low buzz-free hum of a fridge", "a bass sine drone",
            "a deep humming tone", "the drone of a power line", "a low rumbling note"),
    "beep": ("an alarm clock beep", "a shrill electronic tone", "a high-pitched bleep",
             "a short electronic blip", "a beeping timer", "a high tone from a device"),
    "buzz": ("a loud buzz", "an angry buzzing drone", "a rough buzzing synth note",
             "a gritty sawtooth tone", "a buzzing doorbell", "a coarse raspy drone"),
    "hiss": ("a hiss like a leaking tyre", "the sound of television static", "a noisy hiss",
             "fizzing static", "the hiss of a gas leak", "a soft shhh noise"),
    "pluck": ("a plucked banjo string", "a mandolin note", "a pluck of a string",
              "a plucked violin string", "a ukulele note", "a string being picked"),
    "drum": ("a tom drum hit", "a percussive boom", "a drum being struck",
             "a kettle drum strike", "a thumping beat", "a low drum thud"),
    "siren": ("a whistle sliding up", "an upward glissando", "a siren rising",
              "a police siren rising", "a tone sweeping upward", "a climbing whistle"),
    "tick": ("the ticking of a watch", "a stopwatch ticking", "a series of sharp clicks",
             "a clock going tick tock", "a ticking timer", "quick clicks"),
    "chord": ("three notes at once", "a chord on a keyboard", "a harmonic chord of tones",
              "a piano chord", "a few notes in harmony", "a chord played on a synth"),
    "babble": ("a man talking", "murmuring voices", "someone speaking gibberish",
               "a woman talking", "muffled conversation", "someone chattering"),
}

_STOP = frozenset({"a", "an", "the", "of", "from", "on", "in", "at", "to", "being", "that", "like", "some"})


def content_words(phrase: str) -> frozenset[str]:
    """Lower-case words without articles/prepositions; hyphens split words ("high-pitched")."""
    return frozenset(w for w in re.split(r"[^a-z]+", phrase.lower()) if w and w not in _STOP)


def overlaps_held_out(phrase: str, held: tuple[str, ...]) -> bool:
    """True if ``phrase`` contains every content word of some held-out phrasing (or equals one)."""
    words = content_words(phrase)
    return any(content_words(h) <= words for h in held)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _candidates(kind: str) -> list[str]:
    adjs, nouns, sources = _VOCAB[kind]
    out = [f"{_article(a)} {a} {n}" for a in adjs for n in nouns if a != n and a not in n]
    out += [f"{_article(n)} {n} {s}" for n in nouns for s in sources if n.split()[-1] not in s]
    out += [f"{a} {n} {s}" for a in adjs[:3] for n in nouns[:2] for s in sources[:2]
            if a not in n and n.split()[-1] not in s]
    return out


def _build_train(kind: str) -> tuple[str, ...]:
    """Hand-written phrasings first, then template phrases in a fixed shuffled order."""
    held = _HELD_OUT[kind]
    chosen: list[str] = []
    for phrase in _WRITTEN[kind]:
        if phrase not in chosen and not overlaps_held_out(phrase, held):
            chosen.append(phrase)
    cands = _candidates(kind)
    rng = np.random.default_rng(_BUILD_SEED + KINDS.index(kind))
    for i in rng.permutation(len(cands)):
        if len(chosen) >= TRAIN_PER_KIND:
            break
        phrase = cands[int(i)]
        if phrase not in chosen and not overlaps_held_out(phrase, held):
            chosen.append(phrase)
    return tuple(chosen)


TRAIN_PHRASINGS: dict[str, tuple[str, ...]] = {k: _build_train(k) for k in KINDS}
HELD_OUT_PHRASINGS: dict[str, tuple[str, ...]] = {k: _HELD_OUT[k] for k in KINDS}
