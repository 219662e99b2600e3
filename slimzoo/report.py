"""``slimzoo report``: one self-contained HTML page about a zoo, drawn from its manifest alone.

No network fetches: the plots are PNGs (matplotlib, Agg backend) inlined as base64 ``data:`` URIs and the style
sheet is inline. Every number shown in a table cell also sits in a ``data-value`` attribute at full precision,
so a test (or a script) can check the page against the manifest without parsing formatted text.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ddd; padding: .3em .6em; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; } .failed { color: #cf222e; font-weight: bold; } .warn { color: #9a6700; }
.meta { color: #666; font-size: .9em; } img { max-width: 100%; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(value: Any, fmt: str, field: str) -> str:
    if value is None:
        return f'<td class="num" data-field="{field}">-</td>'
    return f'<td class="num" data-field="{field}" data-value="{_esc(repr(value))}">{format(value, fmt)}</td>'


def _plot(platform: dict[str, Any], models: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    front = platform.get("front") or []
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], ".-", color="#888", ms=3, lw=1,
                label="Pareto front (checkpoint)")
    ax.axvline(platform["budget_ms"], color="#cf222e", ls="--", lw=1, label=f"budget {platform['budget_ms']:g} ms")
    chosen = platform.get("chosen") or {}
    if chosen:
        ax.plot([chosen["predicted_latency_ms"]], [chosen["loss_proxy"]], "o", color="#0969da", ms=8,
                label="chosen model")
    ax.set_xlabel(f"predicted latency (ms, {platform['latency_table']['source']} table)")
    ax.set_ylabel("loss proxy (lower is better)")
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_report(manifest: dict[str, Any], zoo: str = "zoo") -> str:
    models = manifest["models"]
    platforms = manifest["platforms"]
    names = list(dict.fromkeys([m["platform"] for m in models] + sorted(platforms)))
    ck = manifest.get("checkpoint", {})
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>slimzoo zoo report: "
             f"{_esc(zoo)}</title><style>{STYLE}</style></head><body>",
             f"<h1>slimzoo zoo: {_esc(zoo)}</h1>",
             f"<p class=\"meta\">checkpoint {_esc(ck.get('file', ''))} sha256 <code>{_esc(ck.get('sha256', ''))}"
             f"</code>; slimzoo {_esc(manifest.get('slimzoo_version', ''))}; manifest format "
             f"{_esc(manifest['format_version'])}</p>"]
    notes = manifest.get("notes") or []
    if notes:  # budgets that do not bind, platforms sharing a config: the zoo is meant to differ per device
        parts.append("<div id=\"notes\"><h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes)
                     + "</ul></div>")
    # summary table
    parts.append("<h2>Summary</h2><table id=\"summary\"><tr><th>platform</th><th>format</th><th>status</th>"
                 "<th>predicted latency (ms)</th><th>budget (ms)</th><th>table</th><th>accuracy</th>"
                 "<th>parameters</th><th>MACs</th><th>size (bytes)</th><th>path</th></tr>")
    for m in models:
        ok = m["status"] == "ok"
        source = (m.get("latency_table") or {}).get("source", "")
        parts.append(
            f"<tr data-platform=\"{_esc(m['platform'])}\" data-format=\"{_esc(m['format'])}\">"
            f"<td>{_esc(m['platform'])}</td><td>{_esc(m['format'])}</td>"
            f"<td class=\"{'ok' if ok else 'failed'}\">{'ok' if ok else 'FAILED: ' + _esc(m.get('reason', ''))}</td>"
            + (_num(m.get("predicted_latency_ms"), ".4f", "predicted_latency_ms")
               + _num(m.get("budget_ms"), "g", "budget_ms")
               + f"<td class=\"{'warn' if source != 'measured' else ''}\">{_esc(source)}</td>"
               + _num(m.get("accuracy"), ".2%", "accuracy") + _num(m.get("parameters"), ",", "parameters")
               + _num(m.get("macs"), ",", "macs") + _num(m.get("size_bytes"), ",", "size_bytes")
               + f"<td><code>{_esc(m.get('path', ''))}</code></td>" if ok else "<td colspan=\"8\"></td>")
            + "</tr>")
    parts.append("</table>")
    for name in names:
        info = platforms.get(name)
        ms = [m for m in models if m["platform"] == name]
        parts.append(f"<section class=\"platform\" data-platform=\"{_esc(name)}\"><h2>{_esc(name)}</h2>")
        if info is None:
            parts.append("<p class=\"failed\">no search result: " + _esc("; ".join(m.get("reason", "")
                                                                                     for m in ms)) + "</p></section>")
            continue
        chosen = info["chosen"]
        parts.append(f"<p>runtime {_esc(info['runtime'])}; budget {info['budget_ms']:g} ms; latency table "
                     f"<b>{_esc(info['latency_table']['source'])}</b>"
                     + (" (an estimate, not measured on the device)" if info['latency_table']['source'] != "measured"
                        else "") + "</p>")
        parts.append(f"<img alt=\"latency vs loss proxy front of {_esc(name)}\" "
                     f"src=\"data:image/png;base64,{_plot(info, ms)}\">")
        parts.append(f"<table class=\"chosen\" data-platform=\"{_esc(name)}\"><tr><th>chosen model</th><th></th></tr>"
                     f"<tr><td>predicted latency (ms)</td>{_num(chosen['predicted_latency_ms'], '.4f', 'predicted_latency_ms')}</tr>"
                     f"<tr><td>loss proxy</td>{_num(chosen['loss_proxy'], '.4f', 'loss_proxy')}</tr>"
                     f"<tr><td>MACs</td>{_num(chosen['macs'], ',', 'macs')}</tr>"
                     f"<tr><td>width config</td><td><code>{_esc(chosen['config'])}</code></td></tr></table>")
        parts.append("<table class=\"formats\"><tr><th>format</th><th>status</th><th>size (bytes)</th>"
                     "<th>precision</th><th>accuracy</th><th>sha256</th></tr>")
        for m in ms:
            if m["status"] == "ok":
                parts.append(f"<tr data-format=\"{_esc(m['format'])}\"><td>{_esc(m['format'])}</td>"
                             f"<td class=\"ok\">ok</td>{_num(m['size_bytes'], ',', 'size_bytes')}"
                             f"<td>{_esc(m.get('precision', ''))}</td>{_num(m.get('accuracy'), '.2%', 'accuracy')}"
                             f"<td><code>{_esc(m['sha256'][:16])}</code></td></tr>")
            else:
                parts.append(f"<tr data-format=\"{_esc(m['format'])}\"><td>{_esc(m['format'])}</td>"
                             f"<td class=\"failed\" colspan=\"5\">FAILED: {_esc(m.get('reason', ''))}</td></tr>")
        parts.append("</table></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
