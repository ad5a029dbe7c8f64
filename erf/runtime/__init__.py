"""Where the work runs: the device (:mod:`~erf.runtime.devices`: one reading of ``cpu``, ``cuda``, ``cuda:N``
and ``auto``) and the process group of ``--distributed`` runs (:mod:`~erf.runtime.distributed`: rank and world
size from the torchrun environment, a gloo group on CPU, nccl on CUDA). Nothing is imported here: ``import
erf.runtime`` does not import torch; import the module you need.
"""
