"""Figures and the per-cell table of the controlled grid's report (:func:`erf.study.grid.grid_report`);
the real-data study's figures are in :mod:`erf.study.figures`.

Functions return matplotlib figures (or text); the command saves them. Sizes are in canvas px,
gains in percentage points (pp), error bars are 95 % t intervals over seed replicates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MARKERS = {16: "o", 32: "s", 48: "^", 24: "D", 8: "v"}


def gain_vs_ratio(report: dict[str, Any]) -> Any:
    """Gain (pp) against log2(ERF/object): seeds as dots, design-point means with seed CIs, the primary fit."""
    import matplotlib.pyplot as plt

    a = report["analysis"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    sizes = sorted({c["size"] for c in report["cells"]})
    colours = {s: f"C{i}" for i, s in enumerate(sizes)}
    for c in report["cells"]:
        if c.get("ratio") is None:
            continue
        ax.plot(math.log2(c["ratio"]), 100 * c["gain"], MARKERS.get(c["size"], "o"), color=colours[c["size"]],
                alpha=0.35, ms=4)
    for p in a["design_points"].values():
        g = p["gain"]
        x = math.log2(p["ratio"])
        err = None
        if g.get("ci"):
            err = [[100 * (g["mean"] - g["ci"][0])], [100 * (g["ci"][1] - g["mean"])]]
        ax.errorbar([x], [100 * g["mean"]], yerr=err, fmt=MARKERS.get(p["size"], "o"), color=colours[p["size"]],
                    capsize=3, ms=7, label=None)
        ax.annotate(f"d={p['dilation']}", (x, 100 * g["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    fit = a.get("primary")
    if fit is not None:
        for s in sizes:
            key = next((k for k in fit["intercepts"] if k.endswith(f", {s})")), None)
            pts = [p for p in a["design_points"].values() if p["size"] == s]
            if key is None or not pts:
                continue
            xs = np.array([math.log2(p["ratio"]) for p in pts])
            xx = np.linspace(xs.min() - 0.2, xs.max() + 0.2, 20)
            ax.plot(xx, 100 * (fit["intercepts"][key] + fit["slope"] * xx), "-", color=colours[s], lw=1)
    for s in sizes:
        ax.plot([], [], MARKERS.get(s, "o"), color=colours[s], label=f"objects {s} px")
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6, ls="--")
    title = "Hypothesis 2: CBAM gain vs ERF/object (dilation twins)"
    if fit is not None:
        title += f"\nslope {100 * fit['slope']:+.1f} pp/doubling [{100 * fit['ci'][0]:+.1f}, {100 * fit['ci'][1]:+.1f}]"
    ax.set_title(title + f" - verdict {report['verdict']['label'].upper()}", fontsize=9)
    ax.set_xlabel("log2( plain twin's object-centred 2 r50 / object size )")
    ax.set_ylabel("gain: acc(CBAM) - acc(plain)  [pp]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def erf_by_dilation(report: dict[str, Any]) -> Any:
    """Object-centred 2 r_q (q = 25/50/75/95 %) of the trained plain twins per dilation, and CBAM's 2 r50."""
    import matplotlib.pyplot as plt

    sizes = sorted({c["size"] for c in report["cells"]})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.8), squeeze=False, sharey=True)
    for ax, s in zip(axes[0], sizes):
        sub = [c for c in report["cells"] if c["size"] == s]
        dils = sorted({c["dilation"] for c in sub})
        for i, q in enumerate(("d25", "d50", "d75", "d95")):
            ys = [np.mean([c["erf_plain_curve"][q] for c in sub if c["dilation"] == d]) for d in dils]
            ax.plot(dils, ys, "o-", color=f"C{i}", label=f"plain 2 r{q[1:]}")
        ys = [np.mean([c["erf_attention"] for c in sub if c["dilation"] == d]) for d in dils]
        ax.plot(dils, ys, "x--", color="k", label="CBAM 2 r50")
        ax.axhline(s, color="red", lw=1, ls=":", label=f"object {s} px")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dils, [str(d) for d in dils])
        ax.set_xlabel("dilation d of stage 2")
        ax.set_title(f"objects {s} px (seed means)", fontsize=9)
    axes[0][0].set_ylabel("ERF diameter at the object's unit [px]")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def positive_control(report: dict[str, Any]) -> Any | None:
    """Test accuracy of plain and CBAM twins on the two-mark task per distance (seed means, 95 % CIs)."""
    import matplotlib.pyplot as plt

    pc = report.get("positive_control")
    if not pc:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    dists = sorted(int(d) for d in pc["by_distance"])
    w = 0.35
    for i, role in enumerate(("acc_plain", "acc_attention")):
        ys = [100 * pc["by_distance"][str(d)][role] for d in dists]
        ax.bar(np.arange(len(dists)) + (i - 0.5) * w, ys, w, label="plain" if i == 0 else "CBAM")
    ax.axhline(50, color="k", lw=0.6, ls="--", label="chance")
    ax.set_xticks(np.arange(len(dists)), [f"D = {d} px" for d in dists])
    ax.set_ylabel("test accuracy [%]")
    ax.set_ylim(0, 100)
    ax.set_title("Positive control: same vs different colour of two marks\n" + ("PASSED" if pc.get("passed")
                                                                                 else "FAILED"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gating_controls(report: dict[str, Any]) -> Any | None:
    """Accuracy of plain, CBAM and each gating control at the control points (seed means, 95 % CIs)."""
    import matplotlib.pyplot as plt

    rows = report["analysis"].get("controls") or []
    if not rows:
        return None
    points = sorted({(r["size"], r["dilation"]) for r in rows})
    fig, axes = plt.subplots(1, len(points), figsize=(4.6 * len(points), 3.6), squeeze=False)
    for ax, (s, d) in zip(axes[0], points):
        ctrl = [c for c in report["controls"] if c["size"] == s and c["dilation"] == d]
        names = ["plain", "CBAM"] + sorted({c["gate"] for c in ctrl})
        vals = [[c["acc_plain"] for c in ctrl if c["gate"] == ctrl[0]["gate"]],
                [c["acc_attention"] for c in ctrl if c["gate"] == ctrl[0]["gate"]]]
        vals += [[c["acc_gate"] for c in ctrl if c["gate"] == g] for g in names[2:]]
        means = [100 * float(np.mean(v)) for v in vals]
        sds = [100 * float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(range(len(names)), means, yerr=sds, capsize=3, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_ylabel("test accuracy [%] (error bar: seed SD)")
        ax.set_title(f"gating controls at s = {s} px, d = {d}", fontsize=9)
    fig.tight_layout()
    return fig


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """``{file name: figure}`` of the report (figures that have no data are left out)."""
    out = {"gain_vs_ratio.png": gain_vs_ratio(report), "erf_by_dilation.png": erf_by_dilation(report),
           "positive_control.png": positive_control(report), "gating_controls.png": gating_controls(report)}
    return {k: v for k, v in out.items() if v is not None}


def _f(v: Any, scale: float = 1.0, fmt: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(scale * v, fmt)


def cell_table(report: dict[str, Any]) -> str:
    """Markdown tables: one row per main cell, per control cell, per positive-control cell, per design point."""
    lines = ["| s px | d | seed | params | MFLOPs | plain 2r25/50/75/95 px | pos-avg 2r50 | CBAM 2r50 | ratio | "
             "acc plain % | acc CBAM % | gain pp | gap plain/CBAM pp | included | s/cell |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(report["cells"], key=lambda c: (c["size"], c["dilation"], c["seed"])):
        cur = c["erf_plain_curve"] or {}
        curve = "/".join(_f(cur.get(q), fmt=".0f") for q in ("d25", "d50", "d75", "d95"))
        pa = (c.get("erf_plain_position_averaged") or {}).get("d50")
        inc = c.get("ratio") is not None
        lines.append(f"| {c['size']} | {c['dilation']} | {c['seed']} | {c['params_plain']:,} | "
                     f"{c['flops_plain'] / 1e6:.1f} | {curve} | {_f(pa)} | {_f(c['erf_attention'])} | "
                     f"{_f(c.get('ratio'), fmt='.2f')} | {_f(c['acc_plain'], 100)} | {_f(c['acc_attention'], 100)} | "
                     f"{_f(c['gain'], 100, '+.1f')} | {_f(c['gap_plain'], 100, '+.1f')}/"
                     f"{_f(c['gap_attention'], 100, '+.1f')} | {'yes' if inc else 'no'} | {c['seconds']:.0f} |")
    a = report["analysis"]
    lines += ["", "| design point | ratio | plain 2r50 px | acc plain % | acc CBAM % | gain pp [95% CI over seeds] | "
              "seeds |", "|---|---|---|---|---|---|---|"]
    for k, p in a["design_points"].items():
        g = p["gain"]
        ci = f" [{_f(g['ci'][0], 100, '+.1f')}, {_f(g['ci'][1], 100, '+.1f')}]" if g.get("ci") else ""
        lines.append(f"| {k} | {p['ratio']:.2f} | {p['erf_plain']:.1f} | {_f(p['acc_plain'], 100)} | "
                     f"{_f(p['acc_attention'], 100)} | {_f(g['mean'], 100, '+.1f')}{ci} | {p['seeds']} |")
    if report.get("controls"):
        lines += ["", "| control | s px | d | seed | acc plain % | acc CBAM % | acc gate % | gate 2r50 px |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in sorted(report["controls"], key=lambda c: (c["gate"], c["size"], c["dilation"], c["seed"])):
            lines.append(f"| {c['gate']} | {c['size']} | {c['dilation']} | {c['seed']} | {_f(c['acc_plain'], 100)} | "
                         f"{_f(c['acc_attention'], 100)} | {_f(c['acc_gate'], 100)} | {_f(c.get('erf_gate'))} |")
    pc = report.get("positive_control")
    if pc:
        lines += ["", "| positive control D px | seeds | acc plain % | acc CBAM % | gain pp [95% CI] |",
                  "|---|---|---|---|---|"]
        for d, r in pc["by_distance"].items():
            g = r["gain"]
            ci = f" [{_f(g['ci'][0], 100, '+.1f')}, {_f(g['ci'][1], 100, '+.1f')}]" if g.get("ci") else ""
            lines.append(f"| {d} | {r['seeds']} | {_f(r['acc_plain'], 100)} | {_f(r['acc_attention'], 100)} | "
                         f"{_f(g['mean'], 100, '+.1f')}{ci} |")
    return "\n".join(lines) + "\n"


__all__ = ["cell_table", "erf_by_dilation", "figures", "gain_vs_ratio", "gating_controls", "positive_control"]
