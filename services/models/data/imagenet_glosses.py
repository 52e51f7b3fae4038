#!/usr/bin/env python3
"""Writes imagenet_glosses.tsv: the WordNet 3.0 synset id and definition ("gloss") of each
ImageNet-1k class, in class-index order, beside imagenet_classes.txt.

Why: the embedding service maps images into the text space by ConSE, embedding one
sentence per class. A bare class name is often ambiguous or misleading to a sentence
encoder ("moped" is the only motorbike ImageNet has, and MiniLM puts "a photo of a moped"
nearer a bicycle than a motorcycle); WordNet's definition says what the thing is ("a
motorbike that can be pedaled or driven by a low-powered gasoline engine").

How: ImageNet's class names are the lemma lists of WordNet 3.0 noun synsets ("tabby, tabby
cat"), and ImageNet orders its classes by synset id (n + the 8-digit data.noun offset). So
class i is the synset whose lemmas equal name i and whose offset is the smallest one above
class i-1's; that pins the two names ImageNet repeats ("crane" the bird and the machine,
"maillot"). The script fails unless every class is found. The gloss kept is its first
clause (up to the first ';'), without example sentences.

usage: apt-get install wordnet-base   # Debian 1:3.0-37, WordNet 3.0
       python3 imagenet_glosses.py [/usr/share/wordnet/data.noun]
"""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
HEADER = """\
# ImageNet-1k classes: WordNet 3.0 synset id and definition (first clause), one line per
# class index, tab-separated. Written by imagenet_glosses.py from Debian wordnet-base
# 1:3.0-37 (data.noun); do not edit by hand.
#
# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Used under the
# WordNet 3.0 license; its full text, with its disclaimer, is in WORDNET-LICENSE here.
"""


def synsets(data_noun):
    """offset -> (lemmas joined as ImageNet writes them, gloss)."""
    out = {}
    for line in open(data_noun, encoding="latin-1"):
        if line.startswith("  "):  # the file's licence preamble
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        count = int(fields[3], 16)
        lemmas = []
        for i in range(count):
            word = fields[4 + 2 * i].replace("_", " ")
            if word.endswith(")") and "(" in word:  # adjective markers such as "(a)"
                word = word[: word.index("(")]
            lemmas.append(word)
        out[int(fields[0])] = (", ".join(lemmas), gloss.strip())
    return out


def first_clause(gloss):
    clause = gloss.split(";")[0].strip()
    return clause.strip('"').strip()


def main():
    data_noun = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet/data.noun"
    labels = (HERE / "imagenet_classes.txt").read_text().splitlines()
    by_name = {}
    for offset, (name, gloss) in synsets(data_noun).items():
        by_name.setdefault(name, []).append((offset, gloss))
    rows, previous = [], -1
    for index, label in enumerate(labels):
        found = sorted(c for c in by_name.get(label, []) if c[0] > previous)
        if not found:
            sys.exit(f"class {index} ({label!r}): no WordNet 3.0 noun synset after n{previous:08d}")
        offset, gloss = found[0]
        rows.append(f"n{offset:08d}\t{first_clause(gloss)}")
        previous = offset
    assert len(rows) == 1000, len(rows)
    (HERE / "imagenet_glosses.tsv").write_text(HEADER + "\n".join(rows) + "\n")
    print(f"wrote {len(rows)} glosses to {HERE / 'imagenet_glosses.tsv'}")


if __name__ == "__main__":
    main()
