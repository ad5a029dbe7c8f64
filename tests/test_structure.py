"""The package's structure: no import cycles, infrastructure (erf.files, erf.runtime) below the domain, no
module over 600 lines, a torch-free ``--help``, registries that own their choices, extension by one file plus a
registration, and the flat one-call API."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import erf

PACKAGE = Path(erf.__file__).resolve().parent


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _dynamic_targets(node: ast.AST, files: dict[str, Path]) -> set[str]:
    """Modules a node imports at run time by name: ``importlib.import_module("pkg.mod")``;
    ``import_module(f"pkg.sub.{name}")`` (as a ``pkgutil.iter_modules`` loop does: every module of ``pkg.sub``);
    a ``"pkg.mod:Attr"`` spec string or a lazy-export table's ``"pkg.mod"`` value (resolved by ``import_module``)."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module" \
            and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return {arg.value} & set(files)
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            prefix = str(arg.values[0].value)
            return {m for m in files if m.startswith(prefix) and "." not in m[len(prefix):]}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        name = node.value.split(":")[0] if node.value.count(":") == 1 else node.value
        if "." in name and name in files:  # a dotted name (the op "erf" in a table is not the package)
            return {name}
    return set()


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Static import graph of every module of the package at ``root``: module -> modules of it that it imports,
    at any depth of its code (functions, ``TYPE_CHECKING`` blocks and lazy imports included) or loads by name
    (``importlib`` / ``pkgutil``, spec strings, lazy-export tables: :func:`_dynamic_targets`); parent packages
    are not edges."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                targets = list(_dynamic_targets(node, files))
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "erf.study.real" in graph["erf.commands.study"]  # the graph sees lazy imports
    assert "erf.study.grid" in graph["erf.commands.study"]
    assert _cycles(graph) == []


def test_the_cycle_detector_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_made_by_name() -> None:
    """The entry point loads every command module through pkgutil/importlib, the probe registry by spec
    strings, packages by lazy-export tables: those are edges (the command line's old cycle, commands importing
    erf.cli back for their helpers, would be found)."""
    graph = import_graph()
    assert {"erf.commands.measure", "erf.commands._base", "erf.commands.study"} <= graph["erf.cli"]
    assert "erf.probes.gradient" in graph["erf.probes.registry"]
    assert "erf.trf.tracer" in graph["erf.trf"]
    assert not any("erf.cli" in graph[m] for m in graph if m.startswith("erf.commands"))


def test_a_planted_cycle_through_pkgutil_is_found(tmp_path: Path) -> None:
    """A package laid out as the CLI was (the entry point imports its commands with pkgutil + importlib, a
    command imports the entry point back) has a cycle; with the helpers in a base module it has none."""
    root = tmp_path / "pkg"
    (root / "cmds").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "cmds" / "__init__.py").write_text("")
    (root / "cli.py").write_text(
        "import importlib, pkgutil\n"
        "import pkg.cmds\n"
        "def load():\n"
        "    for info in pkgutil.iter_modules(pkg.cmds.__path__):\n"
        "        importlib.import_module(f'pkg.cmds.{info.name}')\n")
    (root / "cmds" / "run.py").write_text("from pkg.cli import load\n")
    assert _cycles(import_graph(root)) == [["pkg.cli", "pkg.cmds.run"]]
    (root / "cmds" / "base.py").write_text("def helper(): pass\n")
    (root / "cmds" / "run.py").write_text("from pkg.cmds.base import helper\n")
    assert _cycles(import_graph(root)) == []
    (root / "cmds" / "spec.py").write_text("SPEC = 'pkg.cli:load'\n")  # a spec string resolved by importlib
    assert _cycles(import_graph(root)) == [["pkg.cli", "pkg.cmds.spec"]]


def test_the_trf_package_sits_below_stages_and_layers() -> None:
    """The tracer and its rules import no erf module outside erf.trf but erf.errors (erf.trf.named, the TRF of
    named layers, reads erf.layers); stages imports the tracer at the top, not lazily."""
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith("erf.trf") and module not in ("erf.trf", "erf.trf.named"):
            outside = {e for e in edges if not e.startswith("erf.trf")} - {"erf.errors", "erf._lazy"}
            assert not outside, (module, outside)
    tree = ast.parse((PACKAGE / "stages.py").read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert "erf.trf.tracer" in top


# ----------------------------------------------------------------------------- floors and sizes
INFRASTRUCTURE = ("erf.files", "erf.runtime")
"""The floor below the domain: file I/O and where the work runs. Its modules may import each other, the errors
and the lazy-export helper, nothing that knows about receptive fields, models, data or commands."""

BELOW_EVERYTHING = {"erf.errors", "erf._lazy"}


def _upward_imports(graph: dict[str, set[str]], floor: tuple[str, ...] = INFRASTRUCTURE,
                    allowed: set[str] = BELOW_EVERYTHING) -> dict[str, set[str]]:
    """Modules of ``floor`` (packages by dotted prefix) -> the modules above it that they import."""
    def inside(module: str) -> bool:
        return any(module == f or module.startswith(f + ".") for f in floor)

    found = {m: {e for e in edges if not inside(e) and e not in allowed} for m, edges in graph.items() if inside(m)}
    return {m: e for m, e in found.items() if e}


def test_infrastructure_sits_below_the_domain() -> None:
    """erf.files and erf.runtime import nothing of the domain (a planted upward import is found), and the package
    root holds no infrastructure module of theirs any more."""
    graph = import_graph()
    assert {"erf.files.atomic", "erf.files.outputs", "erf.files.safeload", "erf.files.images",
            "erf.files.checkpoint_io", "erf.runtime.devices", "erf.runtime.distributed"} <= set(graph)
    assert _upward_imports(graph) == {}
    planted = {**graph, "erf.files.outputs": graph["erf.files.outputs"] | {"erf.measurement"}}
    assert _upward_imports(planted) == {"erf.files.outputs": {"erf.measurement"}}
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert not root & {"atomic", "outputs", "safeload", "images", "devices", "distributed", "canvas", "statistics"}


MAX_LINES = 600


def _oversized(root: Path = PACKAGE, limit: int = MAX_LINES) -> dict[str, int]:
    """Modules under ``root`` longer than ``limit`` lines -> their length."""
    sizes = {str(p.relative_to(root.parent)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    return {name: n for name, n in sizes.items() if n > limit}


def test_no_module_of_the_package_exceeds_600_lines(tmp_path: Path) -> None:
    assert len(list(PACKAGE.rglob("*.py"))) > 40
    assert _oversized() == {}
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert _oversized(tmp_path / "pkg") == {str(Path("pkg/sub/long.py")): MAX_LINES + 1}


def test_help_answers_without_importing_torch() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from erf.cli import build_parser\n"
        "from erf.commands._base import COMMANDS\n"
        "parser = build_parser()\n"
        "for argv in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            parser.parse_args(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "import erf\n"
        "print(sorted(COMMANDS), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, torch_loaded = out.rsplit(" ", 1)
    assert "measure" in names and torch_loaded.strip() == "False"


# ----------------------------------------------------------------------------- registries own their choices
def _choices(command: str, dest: str) -> list[str]:
    from erf.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return list(next(a for a in sub._actions if a.dest == dest).choices)


def test_cli_choices_come_from_the_registries() -> None:
    from erf.objects.readers import formats
    from erf.probes.registry import PROBES
    from erf.study.budgets import BUDGETS, INTERACTION_BUDGETS

    assert _choices("measure", "probe") == list(PROBES) == _choices("compare", "probe")
    assert _choices("objects", "format") == list(formats())
    assert _choices("study", "budget") == list(BUDGETS) + list(INTERACTION_BUDGETS)


def test_captum_methods_are_listed_once() -> None:
    """The captum probes are registered from the one table the captum probe reads (no second list)."""
    from erf.probes.registry import CAPTUM_METHODS, PROBES

    captum = [n for n, spec in PROBES.items() if spec.factory.startswith("erf.probes.captum_probes:")]
    assert captum == list(CAPTUM_METHODS) and all(PROBES[n].fixed == {"method": n} for n in captum)
    tree = ast.parse((PACKAGE / "probes" / "captum_probes.py").read_text())
    assigned = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    assert "CAPTUM_METHODS" not in assigned  # imported from the registry, not defined again


def test_a_new_annotation_format_is_one_reader_and_its_registration(tmp_path: Path) -> None:
    """A tab-separated format, as a user would add it: a reader function and one register_reader call."""
    from erf.objects import read_annotations
    from erf.objects.readers.registry import READERS, Reader, formats, register_reader

    def read_tsv(path: Path, col, image_sizes=None) -> None:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            image, *values = line.split("\t")
            col.add(f"{path}: line {n}", image, None, *values)

    register_reader(Reader("tsv", read_tsv, ".tsv", "tab-separated image x0 y0 x1 y1 w h",
                           lambda p: p.suffix == ".tsv"))
    try:
        (tmp_path / "boxes.tsv").write_text("a.jpg\t1\t2\t11\t22\t100\t50\n")
        ann = read_annotations(tmp_path / "boxes.tsv")  # guessed from the suffix
        assert ann.format == "tsv" and (ann.boxes[0].width, ann.boxes[0].height) == (10.0, 20.0)
        assert "tsv" in formats()
    finally:
        del READERS["tsv"]


def test_a_new_probe_is_one_class_and_its_registration() -> None:
    from erf.probes.registry import PROBES, ProbeSpec, register_probe

    register_probe(ProbeSpec("gradient-relu", "erf.probes.gradient:GradientProbe", "RepLKNet's ReLU gradient",
                             fixed={"mode": "relu"}))
    try:
        torch.manual_seed(0)
        model = erf.create_model("twoconv", widths=(4, 8))
        x = torch.randn(4, 3, 16, 16)
        a = erf.measure(model, x, ["stage2"], probe="gradient-relu", bootstrap=0)
        b = erf.measure(model, x, ["stage2"], probe="gradient", probe_options={"mode": "relu"}, bootstrap=0)
        np.testing.assert_array_equal(a.layers[0].sum_map, b.layers[0].sum_map)
        with pytest.raises(erf.ErfError, match="takes no options"):
            erf.measure(model, x, ["stage2"], probe="gradient-relu", probe_options={"crop": False})
    finally:
        del PROBES["gradient-relu"]


def test_a_new_model_family_is_one_module_and_its_registration(tmp_path: Path) -> None:
    """A family registers entries and a state-dict matcher; raw state dicts of it then load by inference."""
    from erf.checkpoints import load_checkpoint
    from erf.models.registry import _ENTRIES, _FAMILIES, ModelEntry, register_family, register_model

    class Tiny(nn.Module):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.tiny_conv = nn.Conv2d(3, width, 3, padding=1)
            self.head = nn.Linear(width, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.tiny_conv(x).mean(dim=(2, 3)))

    register_model(ModelEntry("tinynet", Tiny, family="tiny", description="a one-conv net"))
    register_family("tiny", lambda state: ("tinynet", {"width": state["tiny_conv.weight"].shape[0]})
                    if "tiny_conv.weight" in state else None)
    try:
        assert erf.list_models("tiny*") == ["tinynet"]
        state = Tiny(width=6).state_dict()
        path = tmp_path / "tiny.pt"
        torch.save(state, path)
        loaded = load_checkpoint(path)
        assert loaded.name == "tinynet" and loaded.model.tiny_conv.out_channels == 6
    finally:
        del _ENTRIES["tinynet"], _FAMILIES["tiny"]


def test_registered_parameter_counts_equal_a_build() -> None:
    from erf.models import get_entry, list_models

    for name in list_models():
        entry = get_entry(name)
        with torch.device("meta"):
            built = sum(p.numel() for p in entry.build().parameters())
        assert entry.params == built, name


# ----------------------------------------------------------------------------- the one-call API
def test_measure_takes_a_module_a_tensor_and_modules_as_layers() -> None:
    torch.manual_seed(0)
    model = erf.create_model("resnet20", depth=8, widths=(4, 8, 8))
    x = torch.randn(6, 3, 32, 32)
    by_name = erf.measure(model, x, ["stage2"], bootstrap=0)
    by_module = erf.measure(model, x, [model.layer2], bootstrap=0)
    assert by_module.layers[0].name == "layer2" and by_module.images == 6  # a module keeps its own path
    np.testing.assert_array_equal(by_name.layers[0].sum_map, by_module.layers[0].sum_map)
    # the same images as an ImageSet give the same maps
    as_set = erf.measure(model, erf.ImageSet(x, torch.full((6,), -1), "six"), ["stage2"], bootstrap=0)
    np.testing.assert_array_equal(as_set.layers[0].sum_map, by_name.layers[0].sum_map)
    with pytest.raises(erf.ErfError, match="not part of the model"):
        erf.measure(model, x, [nn.Conv2d(3, 3, 1)])
    with pytest.raises(erf.ErfError, match="float tensor"):
        erf.measure(model, torch.zeros(6, 32, 32), ["stage2"])


def test_compare_takes_modules() -> None:
    torch.manual_seed(0)
    a = erf.create_model("twoconv", widths=(4, 8))
    b = erf.create_model("twoconv", widths=(4, 8))
    x = torch.randn(8, 3, 16, 16)
    result = erf.compare([a, a], x, bootstrap=0)
    assert [m.label for m in result.models] == ["TwoConv", "TwoConv#2"]
    assert [m.trained for m in result.models] == [None, None]  # a module given in code: training not known
    assert all(m["trained"] is None for m in result.to_json()["models"])
    assert all(d.estimate == 0 for lc in result.layers for d in lc.differences)
    other = erf.compare([a, b], x, layers=["stage2"], bootstrap=0)
    assert other.layers[0].name == "stage2" and json.dumps(other.to_json())


def test_library_errors_name_parameters_and_the_cli_names_flags(run_cli) -> None:
    model = erf.create_model("twoconv")
    with pytest.raises(erf.ErfError) as info:
        erf.measure(model, torch.zeros(2, 3, 8, 8), None, batch_size=0)
    assert str(info.value).startswith("batch_size 0:") and "--" not in str(info.value)
    assert info.value.param == "batch_size"
    code, _, stderr = run_cli("measure", "twoconv", "--images", "2", "--batch-size", "0")
    assert code == 2 and "error: --batch-size 0: must be an integer >= 1" in stderr
