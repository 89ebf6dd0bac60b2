"""`leaderboard.html`: one self-contained page per run folder (styles, script and figures inline; no network),
so it opens from disk and from a static host such as GitHub Pages.

The headline table sorts by any column on a click on its header; `#sort=<column>` or
`#sort=<column>:asc|desc` in the URL sorts on load (used by the browser test), and
`window.ecgbenchSort(tableId, column, direction)` does the same from a script.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ecgbench.report.layouts import protocol_table
from ecgbench.report.units import eps_in_microvolts
from ecgbench.report.tables import AUC_NOTE, HEADLINE_NOTE, MEASURES, MODES, pct, auc_table, headline, mode_table
from ecgbench.report.results import static_source
from ecgbench.store.io import atomic_write

__all__ = ["render", "write_html"]

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1b1f24;background:#fff}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:right;white-space:nowrap}
th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}
thead th{background:#f0f3f6}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.not-converged td{color:#8c959f;font-style:italic}
.note{color:#57606a;max-width:60rem}small.ci{color:#57606a}code{background:#f0f3f6;padding:0 .2rem}
img{max-width:100%;height:auto;border:1px solid #eaeef2;margin:.5rem 0}
.scroll{overflow-x:auto}dl.prov dt{font-weight:600;float:left;clear:left;width:7rem}dl.prov dd{margin-left:7.5rem}
"""

SCRIPT = """
(function(){
function key(td){var v=td.getAttribute('data-sort');if(v===null)v=td.textContent.trim();
 var n=parseFloat(v);return (v!==''&&!isNaN(n)&&isFinite(v))?n:v.toLowerCase();}
function sortTable(table,col,dir){
 var ths=table.tHead.rows[0].cells,idx=-1;
 for(var i=0;i<ths.length;i++){if(String(i)===String(col)||ths[i].getAttribute('data-col')===col||ths[i].textContent.replace(/[\\u25B2\\u25BC]/g,'').trim()===col)idx=i;}
 if(idx<0)return false;
 if(!dir)dir=ths[idx].getAttribute('aria-sort')==='descending'?'asc':'desc';
 var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){var x=key(a.cells[idx]),y=key(b.cells[idx]);
  var xm=(x===''||x==='\\u2014'),ym=(y===''||y==='\\u2014');if(xm!==ym)return xm?1:-1;
  var c=(typeof x===typeof y)?(x<y?-1:x>y?1:0):(typeof x==='number'?-1:1);return dir==='asc'?c:-c;});
 rows.forEach(function(r){body.appendChild(r);});
 for(var j=0;j<ths.length;j++)ths[j].removeAttribute('aria-sort');
 ths[idx].setAttribute('aria-sort',dir==='asc'?'ascending':'descending');
 table.setAttribute('data-sorted-by',ths[idx].getAttribute('data-col')+':'+dir);return true;}
window.ecgbenchSort=function(id,col,dir){var t=document.getElementById(id);return t?sortTable(t,col,dir):false;};
function fromHash(){var m=/sort=([^&]+)/.exec(decodeURIComponent(location.hash));if(!m)return;
 var p=m[1].split(':'),t=document.querySelector('table.sortable');if(t)sortTable(t,p[0],p[1]||null);}
document.addEventListener('DOMContentLoaded',function(){
 document.querySelectorAll('table.sortable').forEach(function(t){
  Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){sortTable(t,i);});});});
 fromHash();});
window.addEventListener('hashchange',fromHash);
})();
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _headline_html(board: pd.DataFrame, dataset: str) -> str:
    """The headline table with a numeric `data-sort` on every measured cell, so sorting is by value, not text."""
    shown = headline(board, dataset)
    part = board[board["dataset"] == dataset].reset_index(drop=True)
    numeric = {"params": "params", "clean": "clean", "beats": "clean n"}
    numeric.update({label: col for col, (_, _, label) in MEASURES.items()})
    head = "".join(f'<th data-col="{_e(_slug(c))}" scope="col">{_e(c)}</th>' for c in shown.columns)
    body = []
    for i, row in shown.iterrows():
        tds = []
        for c in shown.columns:
            raw = part.loc[i, numeric[c]] if c in numeric else (row[c] if c != "rank" or row[c] != "—" else "")
            sort = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else raw
            value, _, interval = str(row[c]).partition(" [")
            shown_text = _e(value) + (f'<br><small class="ci">[{_e(interval)}</small>' if interval else "")
            if c == "model" and value.endswith(" (not converged)"):
                shown_text = f'{_e(value[:-len(" (not converged)")])}<br><small>(not converged)</small>'

            tds.append(f'<td data-sort="{_e(sort)}">{shown_text}</td>')
        cls = "" if part.loc[i, "converged"] else ' class="not-converged"'
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return (f'<div class="scroll"><table class="sortable" id="headline-{_e(_slug(dataset))}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _table(df: pd.DataFrame) -> str:
    return '<div class="scroll">' + df.to_html(index=False, border=0, na_rep="—", escape=True) + "</div>"


def _markdown(text: str) -> str:
    """Just enough markdown for plugin sections and notes: pipe tables, `code`, **bold**, paragraphs and lists."""
    def inline(s: str) -> str:
        s = _e(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)

    out, lines, i = [], text.strip().splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
            continue
        if line.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].strip().startswith(("- ", "* ")):
                items.append(f"<li>{inline(lines[i].strip()[2:])}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
            continue
        if line:
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _provenance(run: dict, seeds: Sequence[str]) -> str:
    if not run:
        return "<p>No run.json in this folder.</p>"
    m = run.get("machine", {})
    inv = run.get("invocations", [])
    versions = run.get("versions") or {k: m.get(k) for k in ("python", "torch") if m.get(k)}
    items = [("command", f"<code>{_e(run.get('command', '?'))}</code>"),
             ("machine", _e(f"GPU {m['gpu']}" if m.get("gpu") else f"CPU, {m.get('cpu_count')} cores, {m.get('threads')} torch threads") + f", {_e(m.get('platform'))}"),
             ("versions", _e(", ".join(f"{k} {v}" for k, v in versions.items()))),
             ("wall time", _e(f"{sum(i.get('wall_seconds', 0) for i in inv) / 60:.1f} min over {len(inv)} invocation(s)")),
             ("profile", _e(run.get("profile", {}).get("name"))), ("split", _e(run.get("split"))),
             ("seeds", _e(", ".join(seeds) or str(run.get("profile", {}).get("seed", 0))))]
    if static_source(run):
        items.append(("static source", _e(run.get("source"))))
    return '<dl class="prov">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def render(board: pd.DataFrame, cells: list[dict], run: dict, figures: Sequence[Path], sections: Sequence[tuple[str, str]] = ()) -> str:
    """The page as one string."""
    title = f"ecgbench leaderboard: {run.get('profile', {}).get('name', '')} {', '.join(dict.fromkeys(board['dataset'])) if not board.empty else ''}".strip()
    parts = [f"<h1>{_e(title)}</h1>", f'<p class="note">{_markdown(HEADLINE_NOTE)[3:-4]} Click a column header to sort.</p>']
    datasets = list(dict.fromkeys(board["dataset"])) if not board.empty else []
    for d in datasets:
        parts.append(f'<h2 id="{_e(_slug(d))}">{_e(d)}</h2>')
        parts.append(_headline_html(board, d))
        note = eps_in_microvolts(cells, d)
        if note:
            parts.append(f'<p class="note">{_e(note)}</p>')
        for note in board[(board["dataset"] == d) & (board["notes"] != "")][["model", "notes"]].itertuples(index=False):
            parts.append(f'<p class="note">{_e(note.model)}: {_e(note.notes)}</p>')
        for mode in MODES:
            t = protocol_table(cells, d) if mode == "static" else mode_table(board, cells, d, mode)
            if not t.empty:
                parts += [f"<h3>{_e(d)}, {_e(mode)} attacks: accuracy (%) per attack</h3>", _table(t)]
        auc = auc_table(cells, d)
        if not auc.empty:
            parts += [f"<h3>{_e(d)}: area under the robust accuracy vs eps curve (%)</h3>", _markdown(AUC_NOTE), _table(pct(auc))]
    if figures:
        parts.append("<h2>Figures</h2>")
        for f in figures:
            data = base64.b64encode(Path(f).read_bytes()).decode()
            parts.append(f'<figure><img alt="{_e(Path(f).stem)}" src="data:image/png;base64,{data}"><figcaption>{_e(Path(f).name)}</figcaption></figure>')
    for t, body in sections:
        parts += [f"<h2>{_e(t)}</h2>", _markdown(body)]
    seeds = sorted({s for s in ",".join(board["seeds"]).split(",") if s}, key=int) if not board.empty else []
    parts += ["<h2>Provenance</h2>", _provenance(run, seeds)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_html(out: Path, board: pd.DataFrame, cells: list[dict], run: dict, figures: Sequence[Path], sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write `leaderboard.html` into the run folder atomically."""
    text = render(board, cells, run, figures, sections)
    return atomic_write(Path(out) / "leaderboard.html", lambda fh: fh.write(text.encode()))
