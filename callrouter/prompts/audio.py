"""Recorded audio into the files Asterisk plays: decode, trim silence, resample, normalise loudness, encode.

Decoding (pydub over ffmpeg) and resampling (ffmpeg, whose resampler filters aliasing; pydub's does not)
are the only steps that run a program; trimming, loudness and encoding work on audio in memory and are
pure. Each prompt is written in two forms, both 16-bit mono signed linear, because Asterisk plays
whichever file costs least to translate to the caller's codec:

* `<name>.wav` at 8 kHz: what a G.711 call (every PSTN caller of a 400 number) gets, played as is;
* `<name>.sln16` at 16 kHz: what a wideband phone (G.722, Opus) gets, instead of upsampled 8 kHz.
  It is written only when the source itself has wideband sound (sampled at 16 kHz or more).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Audio files `prompts build` reads; anything ffmpeg decodes works, these are what it looks for in folders.
SOURCE_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".mp4", ".ogg", ".oga", ".opus", ".flac", ".wma", ".amr", ".webm")
# Sound file extensions Asterisk plays (format_* modules): a prompt exists if it has one of these.
PLAYABLE_EXTENSIONS = (
    ".wav", ".wav16", ".WAV", ".sln", ".sln16", ".sln24", ".sln32", ".sln48", ".gsm", ".ulaw", ".alaw",
    ".g722", ".g729", ".siren7", ".siren14", ".ogg", ".ilbc",
)  # fmt: skip


@dataclass(frozen=True)
class OutputFormat:
    """A file form Asterisk plays: extension, sample rate, and whether it has a WAV header or is raw."""

    extension: str
    rate: int
    container: Literal["wav", "raw"]


WAV_8K = OutputFormat(".wav", 8000, "wav")
SLN16 = OutputFormat(".sln16", 16000, "raw")
FORMATS = (WAV_8K, SLN16)


@dataclass(frozen=True)
class Settings:
    """How a recording becomes a prompt. The defaults suit telephone prompts."""

    # Active speech level (RMS of the frames that carry sound), in dBFS. -20 is loud and clear through
    # G.711 with room for the peaks; the ITU-T P.56 network level (-26 dBov) sounds quiet next to the
    # carrier's own announcements.
    loudness_dbfs: float = -20.0
    peak_dbfs: float = -1.0  # the gain stops short of this peak, so nothing clips
    silence_below_peak_db: float = 40.0  # leading/trailing sound this far under the peak counts as silence
    keep_silence_ms: int = 20  # kept before the first and after the last sound, so no onset is cut
    formats: tuple[OutputFormat, ...] = FORMATS


class AudioError(Exception):
    """Audio that cannot become a prompt; the message names the file and says what to do."""


@dataclass(frozen=True)
class Rendered:
    """One output file's bytes, with what was measured on it."""

    format: OutputFormat
    data: bytes
    seconds: float
    level_dbfs: float
    peak_dbfs: float


@dataclass(frozen=True)
class Converted:
    """A source turned into prompt files: the renders, and how much silence was cut."""

    source: Path
    renders: tuple[Rendered, ...]
    trimmed_lead_ms: int
    trimmed_tail_ms: int


def require_ffmpeg() -> None:
    """Fail early and plainly: without ffmpeg, pydub only warns at import and then fails per file."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise AudioError(f"{' and '.join(missing)} not found on PATH: install ffmpeg (Debian/Ubuntu: apt-get install -y ffmpeg)")


def decode(path: Path) -> Any:
    """Any audio ffmpeg can read, as a pydub AudioSegment (typed Any: pydub has no type hints)."""
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    # An absolute path: ffmpeg must never read a name such as "pipe:..." as a protocol.
    absolute = str(path.resolve())
    try:
        return AudioSegment.from_file(absolute)
    except CouldntDecodeError as exc:
        raise AudioError(f"{path}: cannot read audio ({ffmpeg_reason(str(exc)).removeprefix(absolute + ': ')})") from None
    except (IndexError, KeyError, ValueError, EOFError, wave.Error) as exc:
        # pydub's probe finds no audio stream (IndexError/KeyError) or a header lies about its sizes.
        raise AudioError(f"{path}: cannot read audio (no usable audio stream: {type(exc).__name__} {exc})") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read audio ({exc.strerror or exc})") from None


def ffmpeg_reason(message: str) -> str:
    """The line of ffmpeg's output that says what is wrong, rather than its whole banner."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        lowered = line.lower()
        if any(word in lowered for word in ("invalid", "error", "could not", "no such", "not found", "unsupported")):
            return line
    return lines[-1] if lines else "ffmpeg failed"


def to_mono16(segment: Any) -> Any:
    """One channel (the average of all), 16-bit samples: what every later step works on."""
    return segment.set_channels(1).set_sample_width(2)


def frame_levels(segment: Any, frame_ms: int) -> list[float]:
    """dBFS of each consecutive `frame_ms` frame (-inf for digital silence)."""
    return [float(segment[start : start + frame_ms].dBFS) for start in range(0, len(segment), frame_ms)]


def sound_bounds(segment: Any, below_peak_db: float, frame_ms: int = 10) -> tuple[int, int] | None:
    """(start_ms, end_ms) from the first to the last frame with sound, or None if there is none.

    Sound is measured against the recording's own peak, so a quiet recording is not trimmed away and a
    noisy one still loses its lead-in.
    """
    peak = float(segment.max_dBFS)
    if len(segment) == 0 or math.isinf(peak):
        return None
    threshold = peak - below_peak_db
    loud = [i for i, level in enumerate(frame_levels(segment, frame_ms)) if level >= threshold]
    if not loud:
        return None
    return loud[0] * frame_ms, min(len(segment), (loud[-1] + 1) * frame_ms)


def trim_silence(segment: Any, below_peak_db: float, keep_ms: int) -> tuple[Any, int, int]:
    """The segment without its leading and trailing silence (keeping `keep_ms`), and the ms cut at each end."""
    bounds = sound_bounds(segment, below_peak_db)
    if bounds is None:
        raise AudioError("the audio is silent")
    start = max(0, bounds[0] - keep_ms)
    end = min(len(segment), bounds[1] + keep_ms)
    return segment[start:end], start, len(segment) - end


def active_level(segment: Any, frame_ms: int = 20, window_db: float = 30.0) -> float:
    """Loudness as listeners hear speech: RMS over the frames within `window_db` of the loudest frame.

    Pauses between words do not lower it, so a slow and a fast reading of one text come out equally loud.
    """
    levels = [level for level in frame_levels(segment, frame_ms) if not math.isinf(level)]
    if not levels:
        return -math.inf
    floor = max(levels) - window_db
    active = [level for level in levels if level >= floor]
    mean_power = sum(10 ** (level / 10) for level in active) / len(active)
    return 10 * math.log10(mean_power)


def normalise(segment: Any, loudness_dbfs: float, peak_dbfs: float) -> Any:
    """Gain to bring the active level to `loudness_dbfs`, but never lifting the peak above `peak_dbfs`."""
    level, peak = active_level(segment), float(segment.max_dBFS)
    if math.isinf(level) or math.isinf(peak):
        raise AudioError("the audio is silent")
    # 0.05 dB short of the peak limit: samples are whole numbers, and rounding must not cross it.
    gain = min(loudness_dbfs - level, peak_dbfs - peak - 0.05)
    return segment.apply_gain(gain)


def resample(segment: Any, rate: int) -> Any:
    """The mono 16-bit segment at `rate` Hz, resampled by ffmpeg (band-limited, no aliasing)."""
    if segment.frame_rate == rate:
        return segment
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "s16le", "-ar", str(segment.frame_rate), "-ac", "1", "-i", "pipe:0",
        "-f", "s16le", "-ar", str(rate), "-ac", "1", "pipe:1",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, input=segment.raw_data, capture_output=True, check=False)
    except OSError as exc:
        raise AudioError(f"cannot run ffmpeg to resample: {exc}") from None
    if done.returncode != 0:
        raise AudioError(f"ffmpeg could not resample to {rate} Hz: {ffmpeg_reason(done.stderr.decode(errors='replace'))}")
    return segment._spawn(done.stdout, overrides={"frame_rate": rate})


def encode(segment: Any, fmt: OutputFormat) -> bytes:
    """File bytes: a plain 44-byte-header PCM WAV (no metadata chunks), or raw little-endian samples."""
    if segment.frame_rate != fmt.rate or segment.channels != 1 or segment.sample_width != 2:
        raise ValueError(f"{fmt.extension} needs {fmt.rate} Hz mono 16-bit, got {segment.frame_rate} Hz x{segment.channels}")
    raw: bytes = segment.raw_data
    if fmt.container == "raw":
        return raw
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(fmt.rate)
        out.writeframes(raw)
    return buffer.getvalue()


def wanted_formats(source_rate: int, formats: tuple[OutputFormat, ...]) -> tuple[OutputFormat, ...]:
    """Only forms the source can fill: a 16 kHz file made from 8 kHz audio sounds no better and would win."""
    chosen = tuple(f for f in formats if f.rate <= 8000 or source_rate >= f.rate)
    return chosen or formats[:1]


def render(segment: Any, settings: Settings) -> tuple[tuple[Rendered, ...], int, int]:
    """A decoded segment into its prompt files (mono, trimmed, resampled, normalised per output rate)."""
    mono = to_mono16(segment)
    trimmed, lead, tail = trim_silence(mono, settings.silence_below_peak_db, settings.keep_silence_ms)
    renders = []
    for fmt in wanted_formats(mono.frame_rate, settings.formats):
        # Normalised after resampling, so the level measured is the level the caller hears.
        out = normalise(resample(trimmed, fmt.rate), settings.loudness_dbfs, settings.peak_dbfs)
        renders.append(Rendered(fmt, encode(out, fmt), out.duration_seconds, active_level(out), float(out.max_dBFS)))
    return tuple(renders), lead, tail


def convert(path: Path, settings: Settings) -> Converted:
    """Read one source file and render it; every failure is an AudioError naming the file."""
    segment = decode(path)
    try:
        renders, lead, tail = render(segment, settings)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None
    return Converted(path, renders, lead, tail)


def write_prompt(out_dir: Path, name: str, renders: tuple[Rendered, ...]) -> list[Path]:
    """Write a prompt's files atomically, and delete our other forms of it left by an earlier build.

    Asterisk never reads a half-written file (each is renamed into place), and never plays last year's
    `.sln16` to a wideband caller after a new `.wav` was recorded.
    """
    written = []
    target_base = out_dir / name
    target_base.parent.mkdir(parents=True, exist_ok=True)
    for item in renders:
        target = target_base.with_name(target_base.name + item.format.extension)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target_base.name}.", suffix=".tmp", dir=target_base.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(item.data)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        except BaseException:
            os.unlink(tmp_name)
            raise
        written.append(target)
    kept = {r.format.extension for r in renders}
    for fmt in FORMATS:
        stale = target_base.with_name(target_base.name + fmt.extension)
        if fmt.extension not in kept and stale.exists():
            stale.unlink()
    return written


def other_forms(out_dir: Path, name: str) -> list[Path]:
    """Playable files of this prompt we do not manage (e.g. a `.gsm`): Asterisk may pick them instead."""
    base = out_dir / name
    ours = {f.extension for f in FORMATS}
    return [base.with_name(base.name + ext) for ext in PLAYABLE_EXTENSIONS if ext not in ours and base.with_name(base.name + ext).exists()]
