#!/usr/bin/python3
"""Parses an SVG file (or every inline <svg> of an HTML page, with --html) with xml.etree and
prints a JSON summary of what it holds, for the plot tests (tests/plot/*.c) to assert on.

Exit status 0 with the summary on stdout when every document is well-formed XML; 1 with the
parser's message on stderr when one is not. Standard library only (Debian's /usr/bin/python3).

Summary keys: documents (SVG documents parsed), roots (their root tags), cells (rect elements
with a <title> child), titles (the text of every <title>), texts (the text of every <text>),
squares / legal / highlight (rect.square, circle.legal, rect.highlight of a board), pieces ("white GLYPH" or
"black GLYPH" per text.piece), panels (g.panel), ids (elements with an id), links (href attributes),
scripts (script elements), first_text (the text content of the first element given by
--text-of TAG, for escaping tests).
"""
import json
import re
import sys
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def local(tag):
    return tag[len(SVG):] if tag.startswith(SVG) else tag


def summarise(root, out, text_of):
    out["documents"] += 1
    out["roots"].append(local(root.tag))
    for el in root.iter():
        tag = local(el.tag)
        cls = (el.get("class") or "").split()
        if el.get("id") is not None:
            out["ids"] += 1
        out["links"] += sum(1 for k in el.attrib if k.endswith("href"))
        if tag == "script":
            out["scripts"] += 1
        if tag == "rect" and any(local(c.tag) == "title" for c in el):
            out["cells"] += 1
        if tag == "title":
            out["titles"].append(el.text or "")
        if tag == "text":
            out["texts"].append("".join(el.itertext()))
            if "piece" in cls:
                colour = "white" if "white" in cls else "black" if "black" in cls else "?"
                out["pieces"].append(colour + " " + (el.text or ""))
        if tag == "rect" and "square" in cls:
            out["squares"] += 1
        if tag == "rect" and "highlight" in cls:
            out["highlight"] += 1
        if tag == "circle" and "legal" in cls:
            out["legal"] += 1
        if tag == "g" and "panel" in cls:
            out["panels"] += 1
        if text_of is not None and tag == text_of and out["first_text"] is None:
            out["first_text"] = "".join(el.itertext())


def main():
    args = sys.argv[1:]
    html = "--html" in args
    text_of = None
    if "--text-of" in args:
        text_of = args[args.index("--text-of") + 1]
    path = args[0]
    data = open(path, "rb").read()
    out = {"documents": 0, "roots": [], "cells": 0, "titles": [], "texts": [], "squares": 0,
           "legal": 0, "highlight": 0, "pieces": [], "panels": 0, "ids": 0, "links": 0,
           "scripts": 0, "first_text": None}
    docs = [data]
    if html:
        text = data.decode("utf-8")
        docs = [m.encode("utf-8") for m in re.findall(r"<svg\b.*?</svg>", text, re.S)]
        out["html_scripts"] = len(re.findall(r"<script\b", text, re.I))
        out["html_links"] = len(re.findall(r"\b(?:src|href)\s*=", text, re.I))
        out["html_urls"] = len(re.findall(r"url\(", text, re.I))
    for i, doc in enumerate(docs):
        try:
            root = ET.fromstring(doc)
        except ET.ParseError as e:
            print(f"{path}: document {i}: not well-formed: {e}", file=sys.stderr)
            return 1
        summarise(root, out, text_of)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
