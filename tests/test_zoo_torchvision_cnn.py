"""torchvision CNNs without attention (AlexNet, ConvNeXt, DenseNet, GoogLeNet, Inception, MNASNet, MobileNet v2/v3,
ResNet/ResNeXt/Wide ResNet, ShuffleNet, SqueezeNet, VGG): named stages; TRF == gradient support on each, global only
at the head (MobileNet v3's squeeze-and-excitation blocks: global from there, with the reason).
Builders, coverage table and method: tests/zoo_torchvision.py."""

from __future__ import annotations

import pytest
from zoo_oracle import topology
from zoo_torchvision import BUILT, NAMES, REPRESENTATIVES, SAME_TOPOLOGY, check, family, prepared, signature


def test_every_name_has_a_builder() -> None:
    assert set(BUILT) == set(NAMES) and len(NAMES) == 80


def test_same_topology_table_is_exact(one_thread) -> None:
    """Every name of ``SAME_TOPOLOGY`` has its representative's signature, and no two representatives share one.

    All three zoo files' names. The full signature (stage names and covering size: a forward pass and a trace)
    is computed for the table's names only, about 10 s here; distinct representatives are shown by their module
    trees alone (builds only, a few seconds), the full signature being needed only where two trees are equal
    (the full signature of all 80 names took 33 s on this loaded 2-core machine)."""
    assert set(SAME_TOPOLOGY) <= set(NAMES) and set(SAME_TOPOLOGY.values()) <= set(REPRESENTATIVES)
    for name, rep in SAME_TOPOLOGY.items():
        assert family(name) == family(rep), (name, rep)  # checked in the file the name belongs to
    full = {n: signature(*prepared(n)[:2]) for n in sorted(set(SAME_TOPOLOGY) | set(SAME_TOPOLOGY.values()))}
    for name, rep in SAME_TOPOLOGY.items():
        assert full[name] == full[rep], f"{name} no longer has the topology of {rep}: remove it from SAME_TOPOLOGY"
    trees: dict[tuple, list[str]] = {}
    for name in REPRESENTATIVES:
        trees.setdefault(topology(BUILT[name][0](name)), []).append(name)
    for same_tree in (names for names in trees.values() if len(names) > 1):
        sigs = {n: full.get(n) or signature(*prepared(n)[:2]) for n in same_tree}
        assert len(set(sigs.values())) == len(sigs), f"representatives of one signature: {same_tree}"


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if family(n) == "cnn"])
def test_stages_and_trf_equal_gradient_support(name: str, one_thread) -> None:
    check(name)
