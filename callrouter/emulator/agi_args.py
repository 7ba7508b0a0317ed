"""Asterisk's AGI command-line splitting, as `parse_args()` in res/res_agi.c does it.

Kept as a faithful replica so tests can prove that whatever callrouter renders is read by Asterisk as
exactly the arguments it meant: double quotes toggle quoting, a backslash makes the next character
literal, spaces and tabs split words outside quotes, at most MAX_ARGS words.
"""

MAX_ARGS = 128


def parse_args(line: str) -> list[str]:
    """Split one command line (without its newline) into argv the way Asterisk does."""
    argv: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
                argv.append("")
            continue
        if ch in " \t" and not quoted and not escaped:
            if current is not None:
                argv[-1] = "".join(current)
            current = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            if len(argv) >= MAX_ARGS - 1:
                # Asterisk logs "Too many arguments, truncating" and drops the character.
                escaped = False
                continue
            current = []
            argv.append("")
        current.append(ch)
        escaped = False
    if current is not None:
        argv[-1] = "".join(current)
    return argv
