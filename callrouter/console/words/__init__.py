"""The words of each console page, one module per page (a `WORDS` table of key -> (中文, English)).

console/i18n.py merges them with its own; a key defined twice is an error at import, so two pages
cannot silently disagree. The modules import nothing, so any page may use any word.
"""
