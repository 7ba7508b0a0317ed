"""Words of the console's line health display (overview and number pages): key -> (中文, English)."""

from __future__ import annotations

WORDS: dict[str, tuple[str, str]] = {
    "lines.title": ("线路状态", "Lines"),
    "lines.summary": ("{total} 条线路中 {working} 条正常", "{working} of {total} lines working"),
    "lines.all_ok": ("所有线路正常。", "Every line is working."),
    "lines.state.healthy": ("正常", "Working"),
    "lines.state.suspended": ("已暂停（来电先转其他线路）", "Set aside (calls go to the other lines)"),
    "lines.state.half_open": ("试探中（下一通来电会再试）", "On trial (the next call tries it again)"),
    "lines.unreachable": ("连续 {n} 次无法接通", "{n} calls unreachable in a row"),
    "lines.unanswered": ("连续 {n} 次无人接听", "{n} calls unanswered in a row"),
    "lines.since": ("自 {time} 起", "since {time}"),
    "lines.retry": ("{time} 后再试", "tried again after {time}"),
    "lines.sep": ("，", ", "),
    "lines.col.line": ("线路", "Line"),
    "lines.col.state": ("状态", "State"),
    "lines.col.detail": ("情况", "What happened"),
    "lines.hint": ("线路连续接不通时会被暂时跳过，并通知管理员；恢复接听后自动恢复。", "A line that keeps failing is skipped for a while and the manager is told; it comes back by itself once it answers."),
}
