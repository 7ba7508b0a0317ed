"""Stand-in prompts spoken by espeak-ng from the texts written in the plans.

A new plan then plays something sensible ("咨询产品请按1…") from the first call, before a studio recording
exists. The speech goes through the same trimming, resampling and loudness steps as a recording, so a
stand-in and the recording that later replaces it are equally loud.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from callrouter.prompts.audio import AudioError, Rendered, Settings, decode, render

# espeak-ng's Mandarin. Not plain `cmn`: in espeak-ng 1.51 (Debian 12) that voice turns most words into
# pinyin and then reads the pinyin as English ("您好" comes out as English "nin hao"); `cmn-latn-pinyin`
# speaks the same pinyin as Mandarin. Digits are read in Chinese (18 -> 十八), Latin words as pinyin.
DEFAULT_VOICE = "cmn-latn-pinyin"
DEFAULT_SPEED = 175  # espeak-ng's own default: about 3 syllables a second with the pauses, clear for menu choices


def require_espeak() -> None:
    """Fail early and plainly when espeak-ng is missing, rather than once per prompt."""
    if shutil.which("espeak-ng") is None:
        raise AudioError("espeak-ng not found on PATH: install it (Debian/Ubuntu: apt-get install -y espeak-ng)")


def espeak_command(voice: str, speed: int, out: Path) -> list[str]:
    """The espeak-ng call: text on stdin (never argv, so a text starting with '-' is not an option), UTF-8."""
    return ["espeak-ng", "-v", voice, "-s", str(speed), "-b", "1", "--stdin", "-w", str(out)]


def speak(text: str, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED, settings: Settings | None = None) -> tuple[Rendered, ...]:
    """The prompt files for `text`, spoken by espeak-ng and rendered like any recording."""
    if not text.strip():
        raise AudioError("the text is empty")
    with tempfile.TemporaryDirectory(prefix="callrouter-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        try:
            done = subprocess.run(espeak_command(voice, speed, out), input=text.encode("utf-8"), capture_output=True, check=False)
        except OSError as exc:
            raise AudioError(f"cannot run espeak-ng: {exc}") from None
        if done.returncode != 0 or not out.is_file():
            message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
            raise AudioError(f"espeak-ng failed (voice {voice!r}): {message}")
        segment = decode(out)
    renders, _, _ = render(segment, settings or Settings())
    return renders
